"""Where a provider's direct-channel endpoint says it listens, and where its own process dials it."""

from __future__ import annotations

from activities.direct import DirectServer


async def test_an_endpoint_on_every_interface_says_so_and_is_dialled_locally() -> None:
    async with DirectServer({}, "p", "0.0.0.0:0") as server:
        assert server.port > 0
        # the ready line names what the operator configured, with the port it got
        assert server.listening == f"0.0.0.0:{server.port}"
        # the dev stack's executors in the same process dial it on this machine
        assert server.address == f"127.0.0.1:{server.port}"


async def test_an_endpoint_on_one_interface_is_named_and_dialled_there() -> None:
    async with DirectServer({}, "p", "127.0.0.1:0") as server:
        assert server.listening == server.address == f"127.0.0.1:{server.port}"
