"""The production-shape bench's plan of worker processes and its CPU table."""

from __future__ import annotations

import json

import pytest

from bench.shape import ONE, OWN, PLAIN, TWO, cpu_table, process_plan, role_of, worker_plan


def test_the_plan_runs_the_hub_each_control_process_and_the_agency() -> None:
    assert worker_plan(1) == [("hub",), ("control", "pref-tokyo"), ("agency", "city-minato")]
    two = worker_plan(2)
    assert two.count(("control", "pref-tokyo")) == 2
    assert [role_of(a) for a in two] == [
        "hub's worker",
        "Tokyo's control worker(s)",
        "Tokyo's control worker(s)",
        "Minato's agency worker",
    ]
    with pytest.raises(ValueError, match="at least one control"):
        worker_plan(0)


def test_over_the_direct_channel_the_agency_listens_where_the_control_processes_ask() -> None:
    # through the queues: the hub's endpoint only (the runs are resolved there)
    queued = dict(enumerate(process_plan(2, "queue")))
    assert [queued[i][0] for i in range(4)] == worker_plan(2)
    hub, control, again, agency = (queued[i][1] for i in range(4))
    assert hub == {"RENKEI_LINKAGE_LISTEN": hub["RENKEI_LINKAGE_LISTEN"]} and agency == {}
    assert (
        control
        == again
        == {"RENKEI_LINKAGE_ENDPOINTS": json.dumps({"hub": hub["RENKEI_LINKAGE_LISTEN"]})}
    )
    plan = dict(enumerate(process_plan(2, "direct")))
    hub, control, again, agency = (plan[i][1] for i in range(4))
    assert all(env["RENKEI_LINKAGE_TRANSPORT"] == "direct" for env in (hub, control, agency))
    listen = agency["RENKEI_LINKAGE_LISTEN"]
    assert listen.startswith("127.0.0.1:") and int(listen.rpartition(":")[2]) > 0
    at_hub = hub["RENKEI_LINKAGE_LISTEN"]
    assert at_hub.startswith("127.0.0.1:") and at_hub != listen
    assert json.loads(control["RENKEI_LINKAGE_ENDPOINTS"]) == {"city-minato": listen, "hub": at_hub}
    assert again == control
    # only the process that needs a setting is given it
    assert "RENKEI_LINKAGE_ENDPOINTS" not in hub and "RENKEI_LINKAGE_ENDPOINTS" not in agency
    assert "RENKEI_LINKAGE_LISTEN" not in control


def test_cpu_table_is_per_flow_with_a_dash_where_a_shape_runs_no_such_process() -> None:
    spent = {
        TWO: {"Temporal server": 3.0, "hub's worker": 1.5},
        PLAIN: {"Temporal server": 1.0, "plain worker": 0.5},
        ONE: {"Temporal server": 2.0, "the bench's process": 4.0},
    }
    lines = cpu_table(spent, flows=10)
    # columns in the shapes' order, whatever order they were measured in; (b) was not
    assert lines[0] == f"| CPU per flow | {PLAIN} | {ONE} | {TWO} |"
    assert OWN not in lines[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert rows["Temporal server"] == "| Temporal server | 100 ms | 200 ms | 300 ms |"
    assert rows["hub's worker"] == "| hub's worker | – | – | 150 ms |"
    assert rows["plain worker"] == "| plain worker | 50 ms | – | – |"
    assert "PostgreSQL" not in rows  # no shape measured it
    assert lines[-1] == "| **all of them** | **150 ms** | **600 ms** | **450 ms** |"


def test_the_report_names_the_flows_queries_and_counts_their_linkages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench import shape
    from bench.flows import Measured
    from bench.shape import SHAPES, report

    monkeypatch.setattr(shape, "QUERIES", [10])
    last = {
        s: Measured(flows_per_s=rate, latencies_ms=[float(i) for i in range(1, 101)])
        for s, rate in zip(SHAPES, (10.0, 7.0, 12.0, 11.0), strict=True)
    }
    spent = {s: {"wall": 1.0, "Temporal server": 1.0} for s in SHAPES}
    lines = report(last, spent, flows=20, serial=100)
    assert lines[0].startswith("| 10-query flows, 20 at once")
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[2:6]}
    assert rows[PLAIN][1:4] == ["10.0", "100", "**1.00**"]
    assert rows[OWN][1:4] == ["12.0", "120", "**1.20**"]  # ten linkages a flow
