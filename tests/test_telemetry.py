"""Observability: one trace per flow across every linkage; Prometheus metrics; nothing personal."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from activities.agencies import SAMPLE_AGENCIES
from renkei.kernel.settings import Settings
from workers.plugin import connect

from .conftest import free_port
from .helpers import child_rearing, code, pick, sdk, workers

EXPORTED = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTED))


def _personal_values(settings: Settings, people: list[Any]) -> set[str]:
    """Everything about these people that must never appear in telemetry."""
    values: set[str] = set()
    for p in people:
        values |= {str(p.subject_id), p.subject_id.hex, p.birth_date.isoformat()}
        values.add(str(p.taxable_income))
        values |= {code(settings, org, p) for org in (*SAMPLE_AGENCIES, "pref-tokyo")}
    return values


def _leaks(text: str, personal: set[str]) -> bool:
    """Whether ``text`` holds one of ``personal``: a number only as a number of its own (an
    income of 604 is not in a run id's "a604-" nor in a latency of 0.604)."""
    for v in personal:
        if v.isdigit():
            if re.search(rf"(?<![0-9A-Za-z.]){v}(?![0-9A-Za-z.])", text):
                return True
        elif v in text:
            return True
    return False


def _texts(span: ReadableSpan) -> list[str]:
    out = [span.name]
    out += [f"{k}={v}" for k, v in (span.attributes or {}).items()]
    for event in span.events:
        out += [event.name, *(f"{k}={v}" for k, v in (event.attributes or {}).items())]
    return out


async def test_one_trace_spans_the_flow_and_every_linkage_and_metrics_are_served(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    trace.set_tracer_provider(PROVIDER)  # renkei's own spans (the whitelist gate, the hub)
    EXPORTED.clear()
    port = free_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}"))
    )
    traced = await connect(
        settings,
        client.service_client.config.target_host,
        tracer_provider=PROVIDER,
        runtime=runtime,
    )
    h = pick(settings, lambda h: h.municipality == "city-minato" and h.kind == "family")
    applicant, spouse = h.members[0], h.members[1]
    async with workers(traced, pool, settings, catalog, live_whitelist):
        handle = await sdk(traced, settings).start(child_rearing(settings, applicant, spouse))
        result = await asyncio.wait_for(handle.result(), 60)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    linkages = [x.step for x in result.linkages]
    assert len(linkages) == 3

    spans = EXPORTED.get_finished_spans()
    names = [s.name for s in spans]
    assert len({s.context.trace_id for s in spans}) == 1, "one flow, one trace"
    assert "StartWorkflow:child-rearing-allowance-income-check" in names
    assert "RunWorkflow:child-rearing-allowance-income-check" in names
    # The provider's side of each linkage: its activity on its queue, or (the direct channel)
    # its endpoint's serving of it, under the flow's local activity that asked.
    served = "ServeDirect:" if settings.linkage_transport == "direct" else "RunActivity:"
    for x in result.linkages:
        assert f"{served}query.{x.info}" in names
    decided = [s for s in spans if s.name == "renkei.whitelist.decide"]
    assert sorted(str((s.attributes or {})["renkei.step"]) for s in decided) == sorted(linkages)
    assert len([s for s in spans if s.name == "renkei.hub.decide"]) == 3
    # The provider's work hangs under its activity, which hangs under the workflow.
    by_id = {s.context.span_id: s for s in spans}
    for s in decided:
        parent = by_id[s.parent.span_id] if s.parent else None
        assert parent is not None and parent.name.startswith(f"{served}query."), parent
        if served == "ServeDirect:":
            asked = by_id[parent.parent.span_id] if parent.parent else None
            assert asked is not None and asked.name == "RunActivity:renkei.direct-linkage"

    personal = _personal_values(settings, [applicant, spouse])
    for s in spans:
        for text in _texts(s):
            assert not _leaks(text, personal), (s.name, text)

    lines = [line for line in metrics.splitlines() if line and not line.startswith("#")]
    decisions = [line for line in lines if line.startswith("renkei_linkage_decisions")]
    assert any('party="hub"' in line and 'outcome="allowed"' in line for line in decisions)
    assert any('party="provider"' in line and "whitelist_row=" in line for line in decisions)
    assert any(line.startswith("renkei_records_written") for line in lines)
    assert any(line.startswith("renkei_decision_latency") for line in lines)
    assert any(line.startswith("temporal_activity_execution_latency") for line in lines)
    for line in lines:
        # A series is named by its metric and labels; its value is a count or a latency, which
        # may be any number (a latency sum of 604 ms is no income of 604).
        series = line.rsplit(" ", 1)[0]
        assert not _leaks(series, personal), line


def test_the_standard_variables_choose_the_trace_exporter() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    from renkei.kernel.telemetry import _exporter

    assert _exporter({}) is None
    assert isinstance(_exporter({"OTEL_TRACES_EXPORTER": "console"}), ConsoleSpanExporter)
    assert _exporter({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert isinstance(
        _exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}), OTLPSpanExporter
    )
    assert isinstance(_exporter({"OTEL_TRACES_EXPORTER": "otlp"}), OTLPSpanExporter)
    with pytest.raises(ValueError, match="zipkin"):
        _exporter({"OTEL_TRACES_EXPORTER": "zipkin"})
