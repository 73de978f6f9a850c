"""A renkei process that holds gRPC channels and servers starts subprocesses that survive."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

# A process of renkei's (it imports renkei first) serving gRPC and calling itself, while it
# starts children with ``user=`` (a fork, not a vfork: the embedded PostgreSQL's pg_ctl is run
# so). With gRPC's fork handlers on, about one child in five crashed before it ran.
_CHILD = textwrap.dedent(
    """
    import renkei
    import asyncio, os, subprocess, sys
    import grpc

    async def main() -> None:
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        call = channel.unary_unary("/renkei.test.v1.Nothing/Call")

        async def busy() -> None:
            for _ in range(200):
                try:
                    await call(b"x", timeout=1)
                except grpc.aio.AioRpcError:
                    pass

        calls = asyncio.create_task(busy())
        failed = 0
        for _ in range(40):
            done = await asyncio.to_thread(
                subprocess.run, ["true"], user=os.getuid(), stderr=subprocess.DEVNULL
            )
            failed += done.returncode != 0
        await calls
        await channel.close()
        await server.stop(0)
        print("failed", failed)

    asyncio.run(main())
    """
)


def test_children_started_beside_grpc_traffic_all_run() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["failed", "0"], done.stdout + done.stderr[-2000:]
    assert "fork_posix" not in done.stderr  # gRPC ran no fork handler
