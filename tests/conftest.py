"""Session fixtures: one real Temporal dev server and one real PostgreSQL for the whole suite.

PostgreSQL is the embedded server unless ``RENKEI_DATABASE_URL`` names another (a fresh database
is created on it for the run). Each test gets its own task-queue prefix, so workers of different
tests never see each other's tasks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NamedTuple

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from renkei.app.bootstrap import prepare
from renkei.app.client import RenkeiClient
from renkei.app.stack import server_tuning_flags, start_postgres, temporal_cli
from renkei.kernel import keys
from renkei.kernel.codec import data_converter
from renkei.kernel.db import create_pool, migrate
from renkei.kernel.search_attributes import ALL as SEARCH_ATTRIBUTES
from renkei.kernel.settings import Settings, get_settings
from whitelist.catalog import default_catalog
from whitelist.store import LiveWhitelist
from workers.plugin import connect

from .helpers import workers
from .processes import free_port

TESTS = Path(__file__).parent
SAMPLE_RESIDENTS = 400


@pytest.fixture(scope="session")
def database_url() -> AsyncIterator[str]:
    external = os.environ.get("RENKEI_DATABASE_URL")
    if external:
        yield from _external_database(external)
        return
    tmp = Path(tempfile.mkdtemp(prefix="renkei-test-"))
    server, url = start_postgres(tmp)
    try:
        yield url
    finally:
        server.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(tmp, ignore_errors=True)


def _external_database(url: str):
    import asyncio

    name = f"renkei_test_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    base, _, _ = url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """A database of its own on the session's server, for a test that changes for good what
    the others share (a key registry where a revoked key stays revoked)."""
    import asyncio

    name = f"renkei_fresh_{uuid.uuid4().hex[:8]}"
    address, query_sep, query = database_url.partition("?")
    base = address.rpartition("/")[0]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield f"{base}/{name}{query_sep}{query}"
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def own_stack_env(data: Path) -> dict[str, str]:
    """The environment of a renkei command with a stack of its own: no renkei setting of the
    caller's, the data folder ``data``, ports of its own (the defaults may be taken by another
    stack on the machine)."""
    from .processes import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKEI_")}
    env["RENKEI_DATA_DIR"] = str(data)
    for name in ("RENKEI_TEMPORAL_PORT", "RENKEI_UI_PORT", "RENKEI_WEB_PORT"):
        env[name] = str(free_port())
    env["PYTHONPATH"] = str(ROOT)
    return env


class FirstRun(NamedTuple):
    data: Path
    demo: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def first_run() -> Iterator[FirstRun]:
    """``renkei demo`` on a fresh data folder (the README's first command), and the folder it
    leaves: its embedded PostgreSQL and Temporal stopped, the samples put into operation.

    tests/test_demo.py judges the demo's output. The tests of ``renkei up`` (tests/test_stack.py,
    the gateway's) start on this folder afterwards, so the first start of a fresh folder, which
    takes every sample through the conformance kit (most of a minute), is paid once in the
    suite; each of them leaves the folder startable. The folder's parent is one the embedded
    PostgreSQL's own user may enter."""
    folder = Path(tempfile.mkdtemp(prefix="renkei-first-run-"))
    folder.chmod(0o755)
    data = folder / "data"
    try:
        demo = subprocess.run(
            [sys.executable, "-m", "renkei.app.cli", "demo"],
            cwd=folder,
            env=own_stack_env(data),
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        yield FirstRun(data, demo)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# In parallel (`-n 2`, as `.ci/run` and the README run the suite) the tests are shared out a file
# at a time, so each file's module-scoped set-ups are made once, and the files that start on
# the first run's data folder go together, so the demo's first run (most of a minute) is made
# once. The longest groups go out first, so no worker is left alone with one at the end.
FIRST_RUN = "first-run"
LONGEST = (FIRST_RUN, "tests.test_faults", "tests.test_kit_direct", "tests.test_load")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_first_run = {
        item.module.__name__
        for item in items
        if isinstance(item, pytest.Function) and "first_run" in item.fixturenames
    }

    def group(item: pytest.Item) -> str:
        module = item.module.__name__ if isinstance(item, pytest.Function) else item.nodeid
        return FIRST_RUN if module in on_first_run else module

    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))
    first = {name: i for i, name in enumerate(LONGEST)}
    items.sort(key=lambda item: first.get(group(item), len(first)))  # stable: files keep order


@pytest.fixture(scope="session")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    keys.save(path, keys.new_keys())
    return path


@pytest.fixture(scope="session")
def base_settings(database_url: str, keys_file: Path) -> Settings:
    return Settings(
        database_url=database_url,
        sample_residents=SAMPLE_RESIDENTS,
        temporal_address="-",
        keys_file=keys_file,
        ui_port=free_port(),
        web_port=free_port(),
        # Flows in most tests run registered drafts; tests/test_lifecycle.py covers operation.
        mode="test",
    )


@pytest.fixture(scope="session", autouse=True)
def hub_key_for_helpers(base_settings: Settings) -> None:
    """The hub's key the helpers seal the tests' changes of the whitelist and registry with."""
    from tests import helpers

    helpers.HUB[:] = [keys.load(base_settings).signer()]


@pytest_asyncio.fixture(scope="session")
async def pool(base_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert base_settings.database_url
    await migrate(base_settings.database_url)
    p = await create_pool(base_settings.database_url, max_size=20)
    await prepare(p, base_settings)
    yield p
    await p.close()


@pytest_asyncio.fixture(scope="session")
async def temporal_env(base_settings: Settings) -> AsyncIterator[WorkflowEnvironment]:
    """The dev server, its Web UI wired to the codec server at ``base_settings.web_port``."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=data_converter(keys.load(base_settings).codec),
        search_attributes=list(SEARCH_ATTRIBUTES),
        ui=True,
        ui_port=base_settings.ui_port,
        dev_server_extra_args=[
            "--ui-codec-endpoint",
            base_settings.codec_endpoint,
            "--ui-disable-news-fetch",
            *server_tuning_flags(),
        ],
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def client(
    temporal_env: WorkflowEnvironment, base_settings: Settings, pool: asyncpg.Pool
) -> Client:
    """A client as renkei connects one: encrypted payloads and headers."""
    return await connect(base_settings, temporal_env.client.service_client.config.target_host)


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    """Settings with a task-queue prefix of this test's own."""
    return base_settings.model_copy(update={"task_queue_prefix": f"t{uuid.uuid4().hex[:12]}"})


@pytest.fixture
def catalog():
    return default_catalog()


@pytest_asyncio.fixture
async def live_whitelist(
    base_settings: Settings, pool: asyncpg.Pool
) -> AsyncIterator[LiveWhitelist]:
    assert base_settings.database_url
    lw = await LiveWhitelist(
        base_settings.database_url, sealed_by=keys.load(base_settings).signer().public_key()
    ).start()
    yield lw
    await lw.stop()


@pytest_asyncio.fixture
async def env(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist: LiveWhitelist
) -> AsyncIterator[RenkeiClient]:
    """The control worker and every sample agency's worker, and the SDK to start flows."""
    async with workers(client, pool, settings, catalog, live_whitelist):
        yield RenkeiClient(client, settings)


@pytest.fixture
def cli(
    base_settings: Settings,
    pool: asyncpg.Pool,
    temporal_env: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[CliRunner]:
    """The renkei command, configured for the test database, keys and Temporal server (a
    command that starts its own embedded Temporal, each time on the same port, may find it not
    yet free, or not up in time, on a busy machine)."""
    assert base_settings.database_url
    monkeypatch.setenv("RENKEI_DATABASE_URL", base_settings.database_url)
    monkeypatch.setenv("RENKEI_KEYS_FILE", str(base_settings.keys_file))
    monkeypatch.setenv(
        "RENKEI_TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host
    )
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()
