"""The conformance kit: a BPF version, or a provider, checked before anything runs for real.

- :mod:`~renkei.app.kit.scenarios`: the scenario sets (``definitions/conformance/<bpf>.yaml``)
  and their loading;
- :mod:`~renkei.app.kit.stubs`: the stub providers standing in for the orgs;
- :mod:`~renkei.app.kit.clock`: the kit's clock, moved only when the flows are quiet;
- :mod:`~renkei.app.kit.watch`: what the kit's control workers do with its flows (a local
  activity, the direct channel's linkage, is not on the server);
- :mod:`~renkei.app.kit.runner`: running a version's scenarios through the real interpreter,
  hub and gates;
- :mod:`~renkei.app.kit.report`: the report, its verdict and hash, storing it, recording the
  runs' histories;
- :mod:`~renkei.app.kit.contracts`: the check of an org's own providers (``renkei contract ORG``);
- :mod:`~renkei.app.kit.promote`: the samples taken to operating on a fresh installation.
"""

from __future__ import annotations

from renkei.app.kit.contracts import ContractCheck, check_provider
from renkei.app.kit.promote import promote_samples
from renkei.app.kit.report import (
    KIT_VERSION,
    Report,
    ScenarioResult,
    record_histories,
    store_report,
)
from renkei.app.kit.runner import run_scenarios
from renkei.app.kit.scenarios import (
    SCENARIOS_DIR,
    Behaviour,
    Expectation,
    ExpectedLinkage,
    Scenario,
    ScenarioSet,
    ScriptedResponse,
    load_scenarios,
    scenarios_for,
)
from renkei.app.kit.stubs import Stubs

__all__ = [
    "KIT_VERSION",
    "SCENARIOS_DIR",
    "Behaviour",
    "ContractCheck",
    "Expectation",
    "ExpectedLinkage",
    "Report",
    "Scenario",
    "ScenarioResult",
    "ScenarioSet",
    "ScriptedResponse",
    "Stubs",
    "check_provider",
    "load_scenarios",
    "promote_samples",
    "record_histories",
    "run_scenarios",
    "scenarios_for",
    "store_report",
]
