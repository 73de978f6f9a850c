"""A child flow serves its caller's purpose: data fetched for one task does not feed another."""

from __future__ import annotations

from pathlib import Path

from renkei.bpf.loader import load_file, parse_text
from renkei.bpf.validation import validate
from tests.paths import SAMPLES_DIR
from whitelist.annex2 import load_annex2
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex
from whitelist.local import load_local

CATALOG = default_catalog()
INDEX = WhitelistIndex([*load_annex2(CATALOG), *load_local(CATALOG)])
KNOWN = {d.bpf: d for d in (load_file(p).definition for p in sorted(SAMPLES_DIR.glob("*.yaml")))}
PROBE = Path(__file__).parent.parent / "definitions" / "laundering-probe.yaml"


def _errors(text: str, known=KNOWN) -> list[str]:
    loaded = parse_text(text, "x.yaml")
    return [
        f"{i.path}: {i.message}"
        for i in validate(loaded, CATALOG, INDEX, known=known)
        if i.severity == "error"
    ]


def test_a_child_of_another_task_is_refused_at_validation() -> None:
    [error] = _errors(PROBE.read_text(encoding="utf-8"))
    assert error.startswith("steps[0].call.bpf: calls 'vaccination-relief-medical-check'")
    assert "serves task 'vaccination-health-damage-relief'" in error
    assert "'school-entry-notice'" in error


def test_a_child_that_is_not_registered_is_refused_at_validation() -> None:
    text = PROBE.read_text(encoding="utf-8").replace(
        "bpf: vaccination-relief-medical-check", "bpf: no-such-flow"
    )
    assert _errors(text) == ["steps[0].call.bpf: calls 'no-such-flow', which is not registered"]


def test_a_child_of_the_same_task_is_accepted() -> None:
    text = (Path(__file__).parent.parent / "definitions" / "one-stop-probe.yaml").read_text(
        encoding="utf-8"
    )
    assert _errors(text) == []


def test_a_task_may_include_another_only_where_the_catalog_says_so() -> None:
    assert CATALOG.serves_purpose("child-allowance", "child-allowance")
    assert not CATALOG.serves_purpose("school-entry-notice", "vaccination-health-damage-relief")
    widened = CATALOG.model_copy(
        update={
            "tasks": {
                **CATALOG.tasks,
                "school-entry-notice": CATALOG.tasks["school-entry-notice"].model_copy(
                    update={"includes": ["vaccination-health-damage-relief"]}
                ),
            }
        }
    )
    assert widened.serves_purpose("school-entry-notice", "vaccination-health-damage-relief")
