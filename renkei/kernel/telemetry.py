"""Tracing and metrics: one trace per flow, Prometheus metrics per process, nothing personal.

**Tracing** follows the standard ``OTEL_*`` variables: ``OTEL_TRACES_EXPORTER=otlp`` (with
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``…_TRACES_ENDPOINT``; the OTLP exporter reads the rest of its
``OTEL_EXPORTER_OTLP_*`` settings itself), ``console`` (spans printed: for development) or
``none`` (the default when no OTLP endpoint is set). ``OTEL_SERVICE_NAME`` names the process.
Temporal's tracing interceptor carries the trace from the start through the workflow into every
linkage's activity, across processes; the whitelist gate adds a span for its decision.

**Metrics** are served for Prometheus on ``RENKEI_METRICS_PORT`` (unset: none) by the Temporal
runtime, so the SDK's own metrics (task latencies, slots, polls…) and renkei's share one
endpoint: linkage decisions by party, requester, provider, task, item, whitelist row and outcome;
access records written by keeper; whitelist decision latency.

**Temporal's own log** (its core, in Rust: e.g. ``WARN … Activity not found on completion``) is
forwarded to the Python logger :data:`CORE_LOG` instead of being printed on the terminal; the
command line writes it to ``<RENKEI_DATA_DIR>/temporal-core.log`` and shows it only with
``--verbose``.

Attributes and labels name organisations, tasks, items, whitelist rows, steps and BPFs, never a
subject code, an individual number or a value from a payload.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import time
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from renkei.kernel.settings import Settings


class _Row(Protocol):
    @property
    def id(self) -> str: ...


class Decided(Protocol):
    """What telemetry reads of a whitelist decision (:class:`whitelist.decide.Decision`)."""

    @property
    def row(self) -> _Row | None: ...

    @property
    def outcome(self) -> str: ...


D = TypeVar("D", bound=Decided)

TRACER = "renkei"


def _exporter(env: Mapping[str, str]) -> SpanExporter | None:
    kind = env.get("OTEL_TRACES_EXPORTER")
    if kind is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        kind = "otlp" if endpoint else "none"
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r}: renkei knows otlp, console and none")


@functools.cache
def configure_tracing() -> bool:
    """Install the process's tracer provider from ``OTEL_*``; whether traces are exported."""
    exporter = _exporter(os.environ)
    if exporter is None:
        return False
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "renkei")})
    )
    processor = (
        SimpleSpanProcessor(exporter)
        if isinstance(exporter, ConsoleSpanExporter)
        else BatchSpanProcessor(exporter)
    )
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return True


def interceptors(tracer_provider: trace.TracerProvider | None = None) -> list[Any]:
    """Client (and so worker) interceptors: Temporal's tracing, when tracing is on."""
    if tracer_provider is not None:
        return [TracingInterceptor(tracer_provider.get_tracer(TRACER))]
    if configure_tracing():
        return [TracingInterceptor(trace.get_tracer(TRACER))]
    return []


@functools.cache
def tracer() -> trace.Tracer:
    """renkei's tracer, one per process (``trace.get_tracer`` builds a new one at every call).
    Taken before the provider is installed, it is OpenTelemetry's proxy, which goes to the
    provider once there is one (a provider is installed at most once per process)."""
    return trace.get_tracer(TRACER)


# Where Temporal's core log goes: Python logging, not the terminal (see the module's doc).
CORE_LOG = logging.getLogger("temporalio.core")


def telemetry_config(settings: Settings, core_level: str = "WARN") -> TelemetryConfig:
    """The Temporal runtime's telemetry: the core's log at ``core_level`` and above forwarded
    to :data:`CORE_LOG`, Prometheus metrics if ``RENKEI_METRICS_PORT`` is set."""
    metrics = (
        PrometheusConfig(bind_address=f"{settings.metrics_host}:{settings.metrics_port}")
        if settings.metrics_port is not None
        else None
    )
    return TelemetryConfig(
        logging=LoggingConfig(
            filter=TelemetryFilter(core_level=core_level, other_level="ERROR"),
            forwarding=LogForwardingConfig(logger=CORE_LOG),
        ),
        metrics=metrics,
    )


_runtimes: dict[str, Runtime] = {}


def runtime(settings: Settings) -> Runtime:
    """The process's Temporal runtime (its own threads, the core's log forwarded, metrics if a
    port is set): one per metrics address and process, which the process's clients share."""
    key = (
        f"{settings.metrics_host}:{settings.metrics_port}"
        if settings.metrics_port is not None
        else ""
    )
    found = _runtimes.get(key)
    if found is None:
        found = _runtimes[key] = Runtime(telemetry=telemetry_config(settings))
    return found


def release_runtimes() -> bool:
    """Forget the process's runtimes and collect them, so that their threads stop now; whether
    every one is gone (not if a client or worker still holds it).

    A command calls it when its work is done: a Temporal thread still running when the
    interpreter exits makes CPython abort (``Fatal Python error: PyGILState_Release``, exit
    134) after the command has printed its result.
    """
    refs = [weakref.ref(r) for r in _runtimes.values()]
    _runtimes.clear()
    gc.collect()
    return all(r() is None for r in refs)


# -- renkei's own metrics, recorded from activities (no-ops elsewhere) --------------------------

# The meter of renkei's own metrics outside an activity, where one is set: a linkage served over
# the direct channel (:mod:`activities.direct`) runs the provider's gate in no activity, and its
# refusals are counted all the same (an operator alerts on them).
SERVING_METER: ContextVar[MetricMeter | None] = ContextVar("renkei_serving_meter", default=None)


def _meter() -> MetricMeter | None:
    return activity.metric_meter() if activity.in_activity() else SERVING_METER.get()


def decided(party: str, provider: str, req: Any, decide: Callable[[], D]) -> D:
    """Run one whitelist decision (``decide``) for ``req``, counting and timing it."""
    began = time.perf_counter()
    decision = decide()
    took = time.perf_counter() - began
    meter = _meter()
    if meter is None:
        return decision
    labels = {
        "party": party,
        "requester": req.requester,
        "provider": provider,
        "task": req.task,
        "info": req.info,
        "whitelist_row": decision.row.id if decision.row else "none",
        "outcome": decision.outcome,
    }
    meter.create_counter(
        "renkei_linkage_decisions", "linkages decided against the whitelist", "1"
    ).add(1, labels)
    meter.create_histogram_float(
        "renkei_decision_latency", "time to decide one linkage against the whitelist", "ms"
    ).record(took * 1000, {"party": party})
    return decision


def linkage_attributes(req: Any, party: str, outcome: str) -> dict[str, str | int]:
    """Span attributes of one linkage decision: who, what, where in which flow; no subject."""
    return {
        "renkei.party": party,
        "renkei.requester": req.requester,
        "renkei.provider": req.provider,
        "renkei.task": req.task,
        "renkei.info": req.info,
        "renkei.bpf": req.bpf,
        "renkei.bpf_version": req.bpf_version,
        "renkei.step": req.step,
        "renkei.outcome": outcome,
    }


def count_records(keepers: list[str]) -> None:
    meter = _meter()
    if meter is None or not keepers:
        return
    counter = meter.create_counter(
        "renkei_records_written", "access records appended to a keeper's chain", "1"
    )
    for keeper in keepers:
        counter.add(1, {"keeper": keeper})


def over_share(executor: str) -> None:
    """Count a request refused at a direct-channel endpoint (a provider's or the hub's) because
    its executor already has its share of the endpoint being served: an executor sending far
    more than its runs need, and an operator alerts on it. The label is the executor only."""
    meter = _meter()
    if meter is None:
        return
    meter.create_counter(
        "renkei_direct_requests_over_share",
        "direct-channel requests refused: their executor held its share of the endpoint",
        "1",
    ).add(1, {"executor": executor})


def reply_not_taken(provider: str, why: str) -> None:
    """Count a direct-channel reply an executor did not take (not sealed in the pair, for another
    attempt, empty): asked again as an endpoint out of reach, and an operator alerts on it. The
    labels are the provider and the kind, never the reply's content."""
    meter = _meter()
    if meter is None:
        return
    meter.create_counter(
        "renkei_direct_replies_not_taken",
        "direct-channel replies not taken: not sealed in the pair, or for another attempt",
        "1",
    ).add(1, {"provider": provider, "reason": why[:60]})


def refused(provider: str, why: str) -> None:
    """Count a linkage request refused for want of a valid permit, or read as no request at all
    (an operator alerts on it).

    The label is the kind of refusal, never the request's content: the permit's reason up to
    its first colon ("no permit", "the permit is for another attempt (replayed)", …).
    """
    meter = _meter()
    if meter is None:
        return
    meter.create_counter(
        "renkei_refused_requests",
        "linkage requests refused: no valid hub permit, or no request at all",
        "1",
    ).add(1, {"provider": provider, "reason": why.split(":", 1)[0][:60]})
