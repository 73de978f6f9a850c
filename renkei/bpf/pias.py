"""What ``renkei bpf validate`` notes about a definition's PIAs and suspensions.

A linkage goes ahead only where both parties have a PIA in force for the flow's task
(:mod:`whitelist.controls`): a definition whose executor — or a provider it names itself — has
none would run and be denied at its first linkage. Validation says so as a warning, not an error:
a PIA is recorded for an org at any time, and the definition itself is not wrong.
"""

from __future__ import annotations

import datetime as dt

from renkei.bpf.loader import Issue, LoadedBpf, format_path
from renkei.bpf.models import QueryStep, walk
from renkei.bpf.validation import _step_locs
from whitelist.controls import ControlsIndex
from whitelist.models import Catalog


def pia_issues(
    loaded: LoadedBpf, catalog: Catalog, controls: ControlsIndex, day: dt.date
) -> list[Issue]:
    """A warning for each executor (every org of an executor role) and each literal provider
    without a PIA in force for the task on ``day``, and for the version if it is suspended."""
    d = loaded.definition
    out: list[Issue] = []

    def warn(loc: tuple[str | int, ...], message: str) -> None:
        out.append(
            Issue(
                file=loaded.source_name,
                line=loaded.line_of(loc),
                path=format_path(loc),
                message=message,
                severity="warning",
            )
        )

    stopped = controls.bpf_suspension(d.bpf, d.version)
    if stopped is not None:
        warn(("version",), f"{stopped.describe()}: no run starts and its linkages are denied")
    for i, ex in enumerate(d.owners.executors):
        for org in catalog.orgs_of(ex):
            problem = controls.pia_problem(org, d.task, day)
            if problem is not None:
                warn(
                    ("owners", "executors", i),
                    f"executor {problem} on {day.isoformat()}: its linkages are denied until"
                    " one is in force (`renkei pia set`)",
                )
    locs = _step_locs(d.steps, ("steps",))
    seen: set[str] = set()
    for s in walk(d.steps):
        provider = s.query.provider if isinstance(s, QueryStep) else None
        if provider is None or provider not in catalog.orgs or provider in seen:
            continue
        seen.add(provider)
        problem = controls.pia_problem(provider, d.task, day)
        if problem is not None:
            warn(
                (*locs[s.id], "query", "provider"),
                f"provider {problem} on {day.isoformat()}: the linkage is denied until one is"
                " in force",
            )
    return out
