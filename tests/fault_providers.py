"""Providers for fault tests, loaded by ``renkei worker agency ORG --providers``.

``stalling`` serves the sample agency's items, but the first time each linkage reaches it, it
leaves a marker file in ``RENKEI_TEST_MARKERS`` and then never answers: the test kills the
process with the linkage in flight.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
from pydantic import BaseModel

from activities.agencies import providers_for
from activities.linkage import Provider
from renkei.contracts.messages import LinkageRequest


def stalling(org: str, pool: asyncpg.Pool) -> dict[str, Provider]:
    markers = Path(os.environ["RENKEI_TEST_MARKERS"])

    def stall(info: str) -> Provider:
        async def provide(req: LinkageRequest) -> BaseModel:
            (markers / f"{org}.{req.step}").touch()
            await asyncio.Event().wait()  # in flight until the process is killed
            raise AssertionError("unreachable")

        return provide

    return {info: stall(info) for info in providers_for(org, pool)}
