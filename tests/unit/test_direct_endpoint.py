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


def test_the_replies_kept_for_requests_sent_again_are_bounded_in_number_and_bytes() -> None:
    """The endpoint keeps each final reply for a request sent again: at most REPLAYS_KEPT of
    them and REPLAY_BYTES in all, the least recently asked going first; a reply larger than
    all of it is not kept at all."""
    from activities import direct

    server = direct.DirectServer({}, "renkei", "127.0.0.1:0")
    small = b"r" * 100
    for i in range(direct.REPLAYS_KEPT + 10):
        server._keep(("p", f"w{i}", b"d"), small)
    assert len(server._replies) == direct.REPLAYS_KEPT
    assert ("p", "w0", b"d") not in server._replies  # the oldest went first
    big = b"b" * (direct.REPLAY_BYTES // 4)
    for i in range(6):
        server._keep(("p", f"big{i}", b"d"), big)
    assert sum(len(r) for r in server._replies.values()) <= direct.REPLAY_BYTES
    assert ("p", "big5", b"d") in server._replies
    server._keep(("p", "huge", b"d"), b"h" * (direct.REPLAY_BYTES + 1))
    assert ("p", "huge", b"d") not in server._replies
