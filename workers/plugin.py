"""The renkei plugin: the converter, the interceptors and the workflow runner, bundled once.

Every client, worker and replayer of renkei uses the same three things: the pydantic converter
with the encrypting payload codec (failures and headers too), OpenTelemetry tracing, and the
workflow runner. They are bundled here in one Temporal :class:`~temporalio.plugin.SimplePlugin`
instead of being wired separately at each place: a client connected with :func:`connect` hands
the plugin on to every worker built on it, and the replayer of recorded histories
(:func:`replayer`) takes the same converter, so what replays is what ran.

The workers run their flows outside Temporal's workflow sandbox unless ``RENKEI_WORKFLOW_SANDBOX``
asks for it: the only workflows are renkei's own (the interpreter, the life-event scan, the
kit's contract probe), a definition is data, and the sandbox is a check of determinism, not a
boundary. It costs a worker a fresh copy of the workflow modules for every run it starts or
replays, and a call into that copy for every payload of every command. The check stays where
it catches something: :func:`replayer` always replays in the sandbox, with renkei's
pass-through list, so every recorded path of the interpreter (``tests/test_replay.py``) is
checked against calls that are not deterministic.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import os
import socket
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import CodeType, ModuleType
from typing import ClassVar

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from opentelemetry.trace import TracerProvider
from temporalio.client import Client, Interceptor
from temporalio.common import HeaderCodecBehavior
from temporalio.plugin import SimplePlugin
from temporalio.runtime import Runtime
from temporalio.service import ConnectConfig, TLSConfig
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from renkei.contracts import names
from renkei.kernel import keys, telemetry
from renkei.kernel import parties as party_registry
from renkei.kernel.channels import ChannelCodec, Directory, Identity, Routing, channel_converter
from renkei.kernel.keys import KeyRing
from renkei.kernel.settings import Settings, get_settings
from renkei.kernel.tls import party_of

# Modules the sandbox shares with the host rather than re-importing for every workflow run (when
# it runs: the replay of recorded histories, and workers with RENKEI_WORKFLOW_SANDBOX): the
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
    """Make sure the workflow modules load from bytecode (for a worker in the sandbox).

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


class _KeptCode(importlib.machinery.SourceFileLoader):
    """Loads one of renkei's modules from the code compiled the first time this process read it.

    The sandbox runs the workflow modules afresh for every workflow run it starts (a module of
    its own, fresh globals: no state is shared between runs), and for every replay of a run it
    evicted. The module's code itself is immutable: one copy serves every run, where the
    file's bytecode was otherwise read, unmarshalled and kept anew for each run (about 8 % of the
    worker's CPU at a start, and about 100 KiB of the memory of each run it keeps cached).
    """

    codes: ClassVar[dict[tuple[str, float, int], CodeType]] = {}

    def get_code(self, fullname: str) -> CodeType:
        stats = self.path_stats(self.path)
        key = (self.path, stats["mtime"], stats.get("size", -1))  # an edited file is read anew
        code = self.codes.get(key)
        if code is None:
            read = super().get_code(fullname)
            if read is None:  # not a module of source
                raise ImportError(f"no code for {fullname}", name=fullname)
            code = self.codes[key] = read
        return code


class _KeepCode(importlib.abc.MetaPathFinder):
    """Finds renkei's modules as the path finder does, to load them with :class:`_KeptCode`."""

    roots = frozenset(p.partition(".")[0] for p in SANDBOXED_PACKAGES)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] not in self.roots:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if (
            spec is not None
            and type(spec.loader) is importlib.machinery.SourceFileLoader
            and spec.origin is not None
        ):
            spec.loader = _KeptCode(fullname, spec.origin)
        return spec


def keep_code() -> None:
    """Load renkei's modules through :class:`_KeptCode` in this process (once)."""
    if not any(isinstance(f, _KeepCode) for f in sys.meta_path):
        sys.meta_path.insert(0, _KeepCode())


def workflow_runner(sandboxed: bool) -> WorkflowRunner:
    """The runner of renkei's workflows: outside the sandbox, or (``sandboxed``) in it with
    renkei's pass-through modules, the modules it imports for each run read once per process
    (:class:`_KeptCode`)."""
    if not sandboxed:
        return UnsandboxedWorkflowRunner()
    keep_code()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


PLUGIN_NAME = "renkei"


def require_plugin(client: Client) -> None:
    """Refuse a client that does not carry the renkei plugin: a worker built on it would
    exchange unencrypted payloads, untraced, in a runner renkei did not choose."""
    if not any(p.name() == PLUGIN_NAME for p in client.config().get("plugins", [])):
        raise ValueError("a renkei worker needs a client from workers.plugin.connect()")


HUB = names.HUB


def own_parties(settings: Settings) -> list[str]:
    """The parties whose key files this process can read: the hub, and every org whose key
    file lies in the keys folder (the single-process dev stack holds them all; a deployed
    process holds its own party's file only)."""
    found = [HUB] if keys.keys_path(settings).exists() else []
    folder = keys.org_keys_path(settings, "x").parent
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            if path.name.count(".") == 1:  # <org>.json, not <org>.revoked.json
                found.append(path.stem)
    return found or [HUB]  # a first run: the hub's file is created when first needed


def _identity(
    settings: Settings, parties: Sequence[str]
) -> tuple[Identity, KeyRing | None, Ed25519PublicKey]:
    identity = Identity()
    ring: KeyRing | None = None
    verifier: Ed25519PublicKey | None = None
    for party in parties:
        if party == HUB:
            hub = keys.load(settings)
            identity.add(HUB, *hub.openers())
            ring = ring or hub.codec
            verifier = hub.signer().public_key()
        else:
            org = keys.load_org(settings, party)
            identity.add(party, *org.openers())
            ring = ring or org.codec
            verifier = verifier or org.hub_verifier()
    assert verifier is not None
    return identity, ring, verifier


ROUTING = Routing(executor_of=names.executor_of, party_of_queue=names.party_of_queue)


def channel_codec(
    settings: Settings,
    parties: Sequence[str],
    *,
    legacy_ring: bool = True,
    write_ring: bool = False,
    accept_plaintext: bool | None = None,
) -> ChannelCodec:
    """The payload codec of a process acting for ``parties`` (see :mod:`renkei.kernel.channels`).

    ``legacy_ring``: also read payloads of runs from before channels (under the shared ring),
    if the party's key file still carries it.
    """
    identity, ring, _ = _identity(settings, parties)
    directory = Directory()
    for other in own_parties(settings):  # public keys only: the key files found beside ours
        if other not in identity.keys and (other != HUB or keys.keys_path(settings).exists()):
            with contextlib.suppress(OSError, ValueError):
                found = keys.load(settings) if other == HUB else keys.load_org(settings, other)
                # current and former: what was sealed with them still opens (after a rotation)
                for i, key in enumerate(found.openers()):
                    directory.add(other, key.public_key(), current=i == 0)
    for party, private in identity.keys.items():
        for key in private:
            directory.add(party, key.public_key(), current=key is private[0])
    return ChannelCodec(
        identity,
        directory,
        ROUTING,
        primary=HUB if HUB in identity.keys else parties[0],
        ring=ring if legacy_ring or write_ring else None,
        write_ring=write_ring,
        accept_plaintext=settings.accept_plaintext_payloads
        if accept_plaintext is None
        else accept_plaintext,
    )


def attach_registry(client: Client, pool: asyncpg.Pool, settings: Settings) -> None:
    """Let ``client``'s codec find other parties' public keys in the hub-signed registry."""
    codec = client.data_converter.payload_codec
    if not isinstance(codec, ChannelCodec):
        return
    parties = codec.parties
    _, _, verifier = _identity(settings, parties)

    async def refresh() -> dict[str, list[X25519PublicKey | None]]:
        return await party_registry.sealing_keys(pool, verifier)

    codec.directory.set_refresh(refresh)


def renkei_plugin(
    settings: Settings | None = None,
    *,
    org: str | None = None,
    parties: Sequence[str] | None = None,
    legacy: bool = False,
    legacy_ring: bool = True,
    tracer_provider: TracerProvider | None = None,
    interceptors: Sequence[Interceptor] | None = None,
    sandboxed: bool | None = None,
) -> SimplePlugin:
    """The plugin for every client, worker and replayer of a process acting for ``parties``
    (default: ``org`` alone, or every party whose key file this process holds).

    ``legacy``: write under the shared ring, as the runs from before channels read (the legacy
    control worker); what the platform writes to them in its channels is read too.
    ``sandboxed``: run workflows in the sandbox (default: as ``RENKEI_WORKFLOW_SANDBOX`` says).
    """
    s = settings or get_settings()
    acting = list(parties) if parties else ([org] if org else own_parties(s))
    converter = channel_converter(
        channel_codec(s, acting, legacy_ring=legacy_ring, write_ring=legacy)
    )
    return SimplePlugin(
        PLUGIN_NAME,
        data_converter=converter,
        interceptors=list(interceptors)
        if interceptors is not None
        else telemetry.interceptors(tracer_provider),
        workflow_runner=workflow_runner(s.workflow_sandbox if sandboxed is None else sandboxed),
    )


def replayer(
    settings: Settings,
    workflows: Sequence[type],
    *,
    parties: Sequence[str] | None = None,
    build_id: str | None = None,
) -> Replayer:
    """The replayer of recorded histories, acting for ``parties`` (default: every party whose
    key file this process holds), always in the sandbox with renkei's pass-through list,
    whatever ``RENKEI_WORKFLOW_SANDBOX`` says: a workflow that calls something not
    deterministic (the machine's clock, random numbers, I/O) fails its replay. ``build_id``:
    the replayer's task queue is ``replay-<build_id>`` (a run on an executor's control queue
    is replayed by that executor's control worker, ``fixture.control.<executor>``)."""
    return Replayer(
        workflows=list(workflows),
        plugins=[renkei_plugin(settings, parties=parties, interceptors=[], sandboxed=True)],
        header_codec_behavior=HeaderCodecBehavior.CODEC,
        build_id=build_id,
    )


def reads_ring(settings: Settings, kind: str) -> bool:
    """Whether a worker of ``kind`` (``hub``, ``control`` or ``agency``) reads payloads under
    the shared ring of runs from before channels. Every org's key file carries that ring, so a
    payload under it says nothing of who wrote it: whoever holds one could ask as anyone. The
    hub's queue and an executor's own control queue never had such runs; a provider's queue had
    them, and reads them only while the operator says such runs are in flight
    (``RENKEI_LEGACY_RUNS_BEFORE``), where a linkage still needs the hub's permit."""
    return kind == "agency" and settings.legacy_runs_before is not None


def party_client(
    client: Client, settings: Settings, parties: Sequence[str], **options: bool
) -> Client:
    """A client on ``client``'s connection that acts for ``parties`` only (their keys alone)."""
    # The same interceptors (tracing with the same tracer provider) as the client it derives from.
    inherited = [
        i
        for i in client.config(active_config=True).get("interceptors", [])
        if isinstance(i, Interceptor)
    ]
    return Client(
        client.service_client,
        namespace=client.namespace,
        plugins=[
            renkei_plugin(settings, parties=parties, interceptors=inherited, **options)  # type: ignore[arg-type]
        ],
        header_codec_behavior=HeaderCodecBehavior.CODEC,
    )


async def connect(
    settings: Settings | None = None,
    address: str | None = None,
    *,
    org: str | None = None,
    parties: Sequence[str] | None = None,
    tracer_provider: TracerProvider | None = None,
    runtime: Runtime | None = None,
    legacy_ring: bool = True,
) -> Client:
    """A Temporal client with the renkei plugin, headers encrypted too, and metrics
    (``RENKEI_METRICS_PORT``, or ``runtime``). Workers built on the client inherit the plugin.

    ``org`` (or ``parties``) names the party the process acts for: its keys come from that
    org's own key file, and nothing of the hub's is read. Without either, the process acts for
    every party whose key file it can read. ``legacy_ring``: also read payloads under the shared
    ring of runs from before channels (a worker reads them only while such runs are in flight:
    :func:`reads_ring`).
    """
    s = settings or get_settings()
    service = service_config(s, address, runtime)
    return await Client.connect(
        service.target_host,
        namespace=s.namespace,
        plugins=[
            renkei_plugin(
                s,
                org=org,
                parties=parties,
                tracer_provider=tracer_provider,
                legacy_ring=legacy_ring,
            )
        ],
        header_codec_behavior=HeaderCodecBehavior.CODEC,
        runtime=service.runtime,
        tls=service.tls,
        identity=service.identity,
    )


def service_config(
    settings: Settings, address: str | None = None, runtime: Runtime | None = None
) -> ConnectConfig:
    """Where and how every renkei connection to Temporal goes: ``address`` (default
    ``RENKEI_TEMPORAL_ADDRESS``, else the embedded server), mutual TLS as the settings say
    (:func:`tls_config`), in ``runtime`` (default: the process's, with its metrics). With a
    party's certificate, the identity begins with that party (``<party>/pid@host``): the SDK
    names its workers' sticky queues after it, and the gateway admits a party's sticky queues
    only under its own prefix."""
    tls = tls_config(settings)
    identity = ""
    if isinstance(tls, TLSConfig) and tls.client_cert is not None:
        party = party_of(tls.client_cert)
        if party is not None:
            identity = f"{names.identity_prefix(party)}{os.getpid()}@{socket.gethostname()}"
    return ConnectConfig(
        target_host=address or settings.temporal_address or f"127.0.0.1:{settings.temporal_port}",
        tls=tls,
        runtime=runtime or telemetry.runtime(settings),
        identity=identity,
    )


def tls_config(settings: Settings) -> TLSConfig | bool:
    """Mutual TLS to ``renkei gateway`` (``RENKEI_TEMPORAL_TLS_*``): the platform CA that
    signed the gateway's certificate, and this party's own certificate and key. Unset: plain,
    straight to the frontend (the embedded dev server)."""
    s = settings
    if s.temporal_tls_ca is None:
        if s.temporal_tls_cert is not None or s.temporal_tls_key is not None:
            raise ValueError(
                "RENKEI_TEMPORAL_TLS_CERT/KEY are set without RENKEI_TEMPORAL_TLS_CA: set all three"
            )
        return False
    if s.temporal_tls_cert is None or s.temporal_tls_key is None:
        raise ValueError(
            "RENKEI_TEMPORAL_TLS_CA is set: RENKEI_TEMPORAL_TLS_CERT and RENKEI_TEMPORAL_TLS_KEY"
            " name this party's certificate and key"
        )
    try:
        return TLSConfig(
            server_root_ca_cert=s.temporal_tls_ca.read_bytes(),
            client_cert=s.temporal_tls_cert.read_bytes(),
            client_private_key=s.temporal_tls_key.read_bytes(),
            domain=s.temporal_tls_server_name,
        )
    except OSError as err:
        raise ValueError(f"a TLS file cannot be read: {err.filename}: {err.strerror}") from None
