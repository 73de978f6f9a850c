"""``renkei gateway``: the authorising gRPC proxy in front of the Temporal frontend.

The frontend authorises no call, so renkei puts this proxy in front of it: it listens with TLS,
requires a client certificate issued by the platform's CA (:mod:`renkei.kernel.tls`), reads the
calling party from it, and forwards a call to the frontend only if
:class:`renkei.contracts.calls.Policy` allows that party to make it. Requests and answers pass
as bytes, metadata (the namespace header, the client's name and version) and deadlines with
them; the request is parsed (with the protos inside ``temporalio.api``) only to decide, an
answer only to learn the task tokens it hands out. An error of the frontend goes back unchanged
(its code, message and details).

A denied call is answered ``PERMISSION_DENIED`` with the reason (party, method, rule; never a
payload), logged on :data:`LOG` at WARNING (one line an operator can alert on) and counted in
``renkei_gateway_denials`` by party, method and rule.

A revoked certificate gets no call: the gateway reads the hub's signed revocations of TLS
certificates (``trust.revocations``, :func:`renkei.kernel.parties.revoked_certificates`) when it
starts and again every ``RENKEI_GATEWAY_REVOCATION_REFRESH`` seconds; a call of a certificate
revoked since is refused, and one in flight (a long poll) is cut and answered
``UNAUTHENTICATED``.

The gateway keeps the task tokens it handed to each party in memory only: after a restart, a
task received before it cannot be answered through it; it times out on the frontend and is
retried (a workflow task after its task timeout, an activity by its retry policy).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import grpc.aio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError, Message
from temporalio.client import Client
from temporalio.service import ServiceClient

from renkei.contracts.calls import (
    OPEN,
    POLLS,
    Decision,
    Policy,
    request_type,
    response_type,
    split_method,
)
from renkei.contracts.names import HUB
from renkei.kernel import keys, telemetry, tls
from renkei.kernel.db import GATEWAY_ROLE, create_pool
from renkei.kernel.parties import revoked_certificates
from renkei.kernel.settings import Settings

LOG = logging.getLogger("renkei.gateway")

# Histories and workflow tasks can be large: the SDK's own limit, both ways.
MAX_MESSAGE = 128 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]
# Metadata that belongs to one HTTP/2 hop, not to the call: the upstream channel sets its own.
HOP_HEADERS = frozenset({"user-agent", "te", "content-type", "host", "grpc-timeout"})
# Answers that hand out task tokens (read to remember them).
HANDS_TOKENS = POLLS | {"RespondWorkflowTaskCompleted", "StartWorkflowExecution"}
# A deadline further than this is no deadline (grpc reports "none" as a huge number).
NO_DEADLINE = 24 * 3600.0
REVOKED = "the client certificate names no renkei party (renkei:party:<party>), or it was revoked"

# The revoked certificates, (party, serial number): read anew every refresh.
Revocations = Callable[[], Awaitable[frozenset[tuple[str, int]]]]


def _forwarded(metadata: Iterable[tuple[str, str | bytes]] | None) -> list[tuple[str, Any]]:
    return [
        (k, v)
        for k, v in (metadata or ())
        if not k.startswith(":") and not k.startswith("grpc-") and k not in HOP_HEADERS
    ]


def _trailers(metadata: Any) -> tuple[tuple[str, Any], ...]:
    """An upstream error's trailing metadata, as it goes back (its details included)."""
    return tuple(
        (k, v)
        for k, v in (metadata or ())
        if not k.startswith(":") and (k == "grpc-status-details-bin" or not k.startswith("grpc-"))
    )


@dataclass
class Gateway:
    """The proxy's handler: one upstream channel, one policy, the denials counted."""

    upstream: grpc.aio.Channel
    policy: Policy
    count: Callable[[str, str, str], None] | None = None
    revoked: frozenset[tuple[str, int]] = frozenset()
    denied: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    reads: int = 0  # how often the revoked certificates were read since the start
    cut: int = 0  # calls in flight cut by a revocation
    forwarded: Callable[[str, str], None] | None = None  # a call let through, by party and method
    _parties: dict[bytes, tuple[str, int] | None] = field(default_factory=dict)
    _calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = field(default_factory=dict)
    _inflight: dict[tuple[str, int], set[grpc.aio.UnaryUnaryCall[bytes, bytes]]] = field(
        default_factory=dict
    )

    def certificate(
        self, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> tuple[str, int] | None:
        """The party and serial number of the caller's certificate (verified by the TLS
        handshake)."""
        pems = list(context.auth_context().get("x509_pem_cert") or [])
        if len(pems) != 1:
            return None
        pem = pems[0]
        if pem not in self._parties:
            if len(self._parties) > 10_000:
                self._parties.clear()
            party, serial = tls.party_of(pem), tls.serial_of(pem)
            self._parties[pem] = None if party is None or serial is None else (party, serial)
        return self._parties[pem]

    def party(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> str | None:
        """The party of the caller's certificate; ``None`` if it names none or was revoked."""
        found = self.certificate(context)
        return None if found is None or found in self.revoked else found[0]

    def revoke(self, revoked: frozenset[tuple[str, int]]) -> None:
        """From now on, refuse these certificates; cut their calls in flight."""
        self.revoked = revoked
        for cert in revoked & self._inflight.keys():
            for call in self._inflight.pop(cert):
                call.cancel()

    async def _cut(self, label: str, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        """A call in flight of a certificate revoked meanwhile: answered ``UNAUTHENTICATED``."""
        self.cut += 1
        self._deny("unknown", label, Decision(False, "identity"))
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REVOKED)

    def _deny(self, party: str, method: str, decision: Decision) -> None:
        self.denied[(party, method, decision.rule)] += 1
        LOG.warning(
            "gateway denied party=%s method=%s rule=%s: %s",
            party,
            method,
            decision.rule,
            decision.reason,
        )
        if self.count is not None:
            self.count(party, method, decision.rule)

    async def handle(
        self, path: str, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        service, method = split_method(path)
        # A method name from the caller labels a metric only if it is one of the services':
        # made-up names would make a series each.
        known = method in OPEN or request_type(service, method) is not None
        label = method if known else "unknown method"
        cert = self.certificate(context)
        if cert is None or cert in self.revoked:
            self._deny("unknown", label, Decision(False, "identity"))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, REVOKED)
        assert cert is not None
        party = cert[0]
        parsed: Message | None = None
        if party != HUB:
            kind = request_type(service, method)
            if kind is not None:
                try:
                    parsed = kind.FromString(request)
                except DecodeError:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"{method}: the request is not readable"
                    )
        decision = self.policy.decide(party, service, method, parsed)
        if not decision.allowed:
            self._deny(party, label, decision)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, decision.reason)
        remaining = context.time_remaining()
        call = self._calls.get(path)
        if call is None:
            call = self._calls[path] = self.upstream.unary_unary(path)
        pending = call(
            request,
            metadata=grpc.aio.Metadata(*_forwarded(context.invocation_metadata())),
            timeout=remaining if remaining is not None and remaining < NO_DEADLINE else None,
        )
        inflight = self._inflight.setdefault(cert, set())
        inflight.add(pending)
        try:
            answer: bytes = await pending
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED and cert in self.revoked:
                await self._cut(label, context)
            await context.abort(err.code(), err.details() or "", _trailers(err.trailing_metadata()))
            raise  # abort raises; this is never reached
        except asyncio.CancelledError:
            if cert not in self.revoked:
                raise  # the caller went away, or the gateway stops
            await self._cut(label, context)
            raise
        finally:
            inflight.discard(pending)
            if not inflight and self._inflight.get(cert) is inflight:
                del self._inflight[cert]
        if self.forwarded is not None:
            self.forwarded(party, label)
        if party != HUB and method in HANDS_TOKENS:
            kind_out = response_type(service, method)
            if kind_out is not None:
                with contextlib.suppress(DecodeError):
                    self.policy.observe(party, method, kind_out.FromString(answer))
        return answer


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        path = str(handler_call_details.method)

        async def forward(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return await self.gateway.handle(path, request, context)

        return grpc.unary_unary_rpc_method_handler(forward)


@dataclass(frozen=True)
class GatewayFiles:
    """The gateway's TLS files: the platform CA (clients' certificates are checked against it)
    and its own server certificate and key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def of(cls, settings: Settings) -> GatewayFiles:
        missing = [
            name
            for name, value in (
                ("RENKEI_TEMPORAL_TLS_CA", settings.temporal_tls_ca),
                ("RENKEI_GATEWAY_CERT", settings.gateway_cert),
                ("RENKEI_GATEWAY_KEY", settings.gateway_key),
            )
            if value is None
        ]
        if missing:
            raise ValueError(f"the gateway needs {', '.join(missing)} (`renkei keys tls-*`)")
        assert settings.temporal_tls_ca and settings.gateway_cert and settings.gateway_key
        return cls(settings.temporal_tls_ca, settings.gateway_cert, settings.gateway_key)

    def credentials(self) -> grpc.ServerCredentials:
        try:
            ca, cert, key = self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()
        except OSError as err:
            raise ValueError(f"a TLS file cannot be read: {err.filename}: {err.strerror}") from None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )


def denial_counter(settings: Settings) -> Callable[[str, str, str], None]:
    """``renkei_gateway_denials`` on the process's metrics endpoint (``RENKEI_METRICS_PORT``)."""
    counter = telemetry.runtime(settings).metric_meter.create_counter(
        "renkei_gateway_denials", "Temporal calls the gateway refused, by party and method", "1"
    )

    def count(party: str, method: str, rule: str) -> None:
        counter.add(1, {"party": party, "method": method, "rule": rule})

    return count


def call_counter(settings: Settings) -> Callable[[str, str], None]:
    """``renkei_gateway_calls``: the calls it let through, by party and method."""
    counter = telemetry.runtime(settings).metric_meter.create_counter(
        "renkei_gateway_calls", "Temporal calls the gateway let through, by party and method", "1"
    )

    def count(party: str, method: str) -> None:
        counter.add(1, {"party": party, "method": method})

    return count


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings,
    upstream: str,
    files: GatewayFiles,
    *,
    listen: str | None = None,
    revocations: Revocations | None = None,
) -> AsyncIterator[tuple[Gateway, int]]:
    """The gateway serving on ``listen`` (default ``RENKEI_GATEWAY_LISTEN``) in front of
    ``upstream``; yields it and the port it listens on. ``revocations`` (the revoked
    certificates) is read before it serves, and again every
    ``RENKEI_GATEWAY_REVOCATION_REFRESH`` seconds."""
    credentials = files.credentials()
    revoked: frozenset[tuple[str, int]] = frozenset()
    if revocations is not None:
        try:
            revoked = await revocations()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise ValueError(
                f"the revoked certificates cannot be read: {type(err).__name__}"
            ) from None
    channel = grpc.aio.insecure_channel(upstream, options=CHANNEL_OPTIONS)
    gateway = Gateway(
        channel,
        Policy(settings.namespace),
        denial_counter(settings),
        revoked,
        forwarded=call_counter(settings),
    )
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers((_Handler(gateway),))
    port = server.add_secure_port(listen or settings.gateway_listen, credentials)
    if not port:
        await channel.close()
        raise ValueError(f"the gateway cannot listen on {listen or settings.gateway_listen}")
    await server.start()
    refreshing = (
        asyncio.create_task(_refresh(gateway, revocations, settings.gateway_revocation_refresh))
        if revocations is not None
        else None
    )
    try:
        yield gateway, port
    finally:
        if refreshing is not None:
            refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refreshing
        # Long polls in flight end now: their workers poll again (elsewhere, or later).
        await server.stop(grace=1)
        await channel.close()


async def _refresh(gateway: Gateway, revocations: Revocations, every: float) -> None:
    """Read the revoked certificates every ``every`` seconds; while they cannot be read, the
    last list stands (and a warning says so)."""
    while True:
        await asyncio.sleep(every)
        try:
            revoked = await revocations()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            LOG.warning("gateway: the revoked certificates cannot be read (%s)", type(err).__name__)
            continue
        if revoked != gateway.revoked:
            gateway.revoke(revoked)
        gateway.reads += 1


def hub_verifier(settings: Settings) -> Ed25519PublicKey:
    """The hub's public signing key, against which revocations are checked: from
    ``RENKEI_GATEWAY_HUB_PUBLIC`` (`renkei keys hub-public`), else from the hub's key file if
    this machine has it."""
    if settings.gateway_hub_public is not None:
        try:
            text = settings.gateway_hub_public.read_text(encoding="utf-8")
            return keys.PublicKeys.model_validate_json(text).verifier()
        except (OSError, ValueError) as err:
            raise ValueError(
                f"RENKEI_GATEWAY_HUB_PUBLIC: {settings.gateway_hub_public} is not the hub's"
                f" public keys (`renkei keys hub-public`): {type(err).__name__}"
            ) from None
    if keys.keys_path(settings).exists():
        return keys.load(settings).public(HUB).verifier()
    raise ValueError(
        "the gateway needs the hub's public keys to check revocations: set"
        " RENKEI_GATEWAY_HUB_PUBLIC (`renkei keys hub-public` writes them)"
    )


async def serve(
    settings: Settings,
    upstream: str,
    database_url: str | None,
    stop: asyncio.Event,
    ready: Callable[[str], None] = print,
) -> None:
    """Run ``renkei gateway`` until ``stop`` is set, reading revocations from the database."""
    files = GatewayFiles.of(settings)
    hub = hub_verifier(settings)
    if database_url is None:
        raise ValueError(
            "the gateway reads the revoked certificates from the database: set"
            " RENKEI_DATABASE_URL, or run `renkei up` on this data folder first"
        )
    try:
        pool = await create_pool(database_url, min_size=1, max_size=2, role=GATEWAY_ROLE)
    except (OSError, asyncpg.PostgresError) as err:
        raise ValueError(f"the database cannot be reached: {type(err).__name__}") from None
    try:
        async with running_gateway(
            settings,
            upstream,
            files,
            revocations=lambda: revoked_certificates(pool, hub),
        ) as (_, port):
            host = settings.gateway_listen.rpartition(":")[0]
            ready(f"gateway listening on {host}:{port} (TLS, client certificates) → {upstream}")
            await stop.wait()
    finally:
        await pool.close()


def dev_certificates(folder: Path, parties: Iterable[str]) -> GatewayFiles:
    """The embedded stack's CA and certificates in ``folder``: made on the first guarded start
    (``renkei up --gateway``), used as they are after. A certificate for each of ``parties``,
    and the gateway's for ``localhost`` and ``127.0.0.1``."""
    try:
        if not tls.ca_paths(folder)[0].exists():
            tls.make_ca(folder)
        for party in parties:
            if not tls.party_paths(folder, party)[0].exists():
                tls.issue(folder, party)
        cert, key = tls.party_paths(folder, tls.GATEWAY)
        if not cert.exists():
            tls.issue(folder, tls.GATEWAY, server_names=["localhost", "127.0.0.1"])
    except tls.TlsError as err:
        raise ValueError(str(err)) from None
    return GatewayFiles(tls.ca_paths(folder)[0], cert, key)


def party_settings(settings: Settings, folder: Path, party: str) -> Settings:
    """``settings`` with ``party``'s certificate of the CA in ``folder`` (the gateway is dialled
    as ``localhost``)."""
    cert, key = tls.party_paths(folder, party)
    return settings.model_copy(
        update={
            "temporal_tls_ca": tls.ca_paths(folder)[0],
            "temporal_tls_cert": cert,
            "temporal_tls_key": key,
            "temporal_tls_server_name": "localhost",
        }
    )


@contextlib.asynccontextmanager
async def guarded(
    settings: Settings, upstream: str, pool: asyncpg.Pool, parties: Iterable[str]
) -> AsyncIterator[tuple[str, Callable[[str], Client]]]:
    """The embedded stack guarded (``renkei up --gateway``): the gateway in front of
    ``upstream`` on ``RENKEI_GATEWAY_LISTEN``, with the CA and certificates under the data
    folder (``tls/``), the hub's signed revocations read from ``pool``; yields the address it
    is dialled at and, for each of ``parties``, a connection through it with that party's own
    certificate."""
    from workers.plugin import service_config

    wanted = sorted(set(parties))
    folder = settings.data_dir / "tls"
    files = dev_certificates(folder, wanted)
    hub = keys.load(settings).public(HUB).verifier()
    async with running_gateway(
        settings, upstream, files, revocations=lambda: revoked_certificates(pool, hub)
    ) as (_, port):
        address = f"localhost:{port}"
        connections: dict[str, Client] = {}
        for party in wanted:
            service = await ServiceClient.connect(
                service_config(party_settings(settings, folder, party), address)
            )
            connections[party] = Client(service, namespace=settings.namespace)
        yield address, connections.__getitem__
