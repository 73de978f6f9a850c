"""The renkei plugin: the converter, the interceptors and the sandbox, bundled once.

Every client, worker and replayer of renkei uses the same three things: the pydantic converter
with the encrypting payload codec (failures and headers too), OpenTelemetry tracing, and the
workflow sandbox with renkei's pass-through list. They are bundled here in one Temporal
:class:`~temporalio.plugin.SimplePlugin` instead of being wired separately at each place: a
client connected with :func:`connect` hands the plugin on to every worker built on it, and the
replayer of recorded histories takes the same plugin, so what replays is what ran.
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path

from opentelemetry.trace import TracerProvider
from temporalio.client import Client
from temporalio.common import HeaderCodecBehavior
from temporalio.plugin import SimplePlugin
from temporalio.runtime import Runtime
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from renkei.kernel import keys, telemetry
from renkei.kernel.codec import data_converter
from renkei.kernel.settings import Settings, get_settings

# Modules the sandbox shares with the host rather than re-importing for every workflow run: the
# C++ CEL runtime and protobuf cannot be imported twice, the CEL program keeps each compiled
# definition for every run (the compiler it uses loads in the host only), and the models are
# large and pure.
PASSTHROUGH = (
    "pydantic",
    "pydantic_core",
    "cel_expr_python",
    "google.protobuf",
    "renkei.contracts.messages",
    "whitelist",
    "renkei.bpf.models",
    "renkei.bpf.cel.program",
    "renkei.kernel.search_attributes",
    "renkei.kernel.attest",
    "cryptography",
    "opentelemetry",
)

# The packages whose modules a workflow run imports inside the sandbox.
SANDBOXED_PACKAGES = (
    "workflows",
    "activities",
    "renkei.contracts",
    "renkei.bpf",
    "renkei.kernel",
    "whitelist",
)


def precompile() -> None:
    """Make sure the workflow modules load from bytecode.

    The sandbox imports the workflow modules afresh for every workflow run it starts. Without a
    ``.pyc`` (a read-only tree, or ``PYTHONDONTWRITEBYTECODE`` set) each of those imports
    compiles the source again: about a fifth of a busy control worker's CPU. Writing the
    bytecode once here makes it a read instead; where the tree is read-only (an installed
    package is compiled when installed) this does nothing.
    """
    import compileall

    for package in SANDBOXED_PACKAGES:
        folder = Path(str(importlib.import_module(package).__file__)).parent
        with contextlib.suppress(OSError):
            compileall.compile_dir(folder, maxlevels=0, quiet=2)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox with renkei's pass-through modules."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


PLUGIN_NAME = "renkei"


def require_plugin(client: Client) -> None:
    """Refuse a client that does not carry the renkei plugin: a worker built on it would
    exchange unencrypted payloads, or run workflows outside renkei's sandbox."""
    if not any(p.name() == PLUGIN_NAME for p in client.config().get("plugins", [])):
        raise ValueError("a renkei worker needs a client from workers.plugin.connect()")


def payload_ring(settings: Settings, org: str | None = None) -> keys.KeyRing:
    """The payload key ring from this party's own key file: an org's, or the hub's."""
    return keys.load_org(settings, org).codec if org else keys.load(settings).codec


def renkei_plugin(
    settings: Settings | None = None,
    *,
    org: str | None = None,
    tracer_provider: TracerProvider | None = None,
) -> SimplePlugin:
    """The plugin for every client, worker and replayer of this party (``org``, or the hub)."""
    s = settings or get_settings()
    return SimplePlugin(
        PLUGIN_NAME,
        data_converter=data_converter(
            payload_ring(s, org), accept_plaintext=s.accept_plaintext_payloads
        ),
        interceptors=telemetry.interceptors(tracer_provider),
        workflow_runner=workflow_runner(),
    )


async def connect(
    settings: Settings | None = None,
    address: str | None = None,
    *,
    org: str | None = None,
    tracer_provider: TracerProvider | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """A Temporal client with the renkei plugin, headers encrypted too, and metrics
    (``RENKEI_METRICS_PORT``, or ``runtime``). Workers built on the client inherit the plugin.

    ``org`` names the party the process acts for: its keys come from that org's own key file,
    and nothing of the hub's is read.
    """
    s = settings or get_settings()
    return await Client.connect(
        address or s.temporal_address or f"127.0.0.1:{s.temporal_port}",
        namespace=s.namespace,
        plugins=[renkei_plugin(s, org=org, tracer_provider=tracer_provider)],
        header_codec_behavior=HeaderCodecBehavior.CODEC,
        runtime=runtime or telemetry.runtime(s),
    )
