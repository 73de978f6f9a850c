"""One client process of the load test: starts the flows it is given, prints their ids.

``python -m tests.load_client FILE`` reads one StartFlow (JSON) per line of FILE and starts them
all at once through the SDK, on the servers named by the ``RENKEI_*`` variables.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from renkei.app.client import RenkeiClient
from renkei.contracts.messages import StartFlow
from renkei.kernel import telemetry
from renkei.kernel.settings import Settings


async def main(path: Path) -> None:
    settings = Settings()
    sdk = await RenkeiClient.connect(settings)
    lines = (await asyncio.to_thread(path.read_text)).splitlines()
    starts = [StartFlow.model_validate_json(line) for line in lines]
    handles = await asyncio.gather(*(sdk.start(s) for s in starts))
    print(json.dumps([h.id for h in handles]))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
    # The SDK's Temporal runtime keeps threads of its own; one still running while CPython
    # finalizes makes it abort (temporalio/sdk-python#300) after the ids were printed. Let go of
    # the runtime, then leave without finalizing: the work is done and the output flushed.
    telemetry.release_runtimes()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
