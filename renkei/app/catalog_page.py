"""The BPF catalog: one static, self-contained HTML page of the operating flows.

For each flow: its purpose, who defines and who runs it, what starts it, the diagram, a table
of which agencies will be asked for which data under which legal reference, which partners (a
private company among them) will be asked to act, with what is sent to them and whether the
citizen's consent is asked first, each taking part's PIA for the flow's task, and any suspension
that stops it: the page a citizen reads to foresee what will happen to their data. Written by
``renkei bpf catalog``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from pydantic import BaseModel

from renkei.bpf.models import ActStep, BpfDefinition, QueryStep, walk
from renkei.bpf.render import build, provider_label, to_svg
from renkei.bpf.render.labels import partner_label
from whitelist.controls import LEVEL_JA, ControlsIndex, stamp
from whitelist.decide import WhitelistIndex, japan_today
from whitelist.models import Catalog, role_of

TEMPLATES = Path(__file__).parent / "templates"


class Linkage(BaseModel):
    step: str
    info_ja: str
    info_en: str
    agencies_ja: str
    agencies_en: str
    legal: list[str]
    act: bool = False  # a partner asked to carry out an action (info_* names the action)
    sends: list[str] = []  # an act: the fields sent to the partner, nothing else
    consent: bool = False  # an act: only on the citizen's own consent


class PiaLine(BaseModel):
    """One org taking part in a flow, and its PIA for the flow's task (番号法第28条)."""

    org_ja: str
    org_en: str
    in_force: bool
    status_ja: str
    status_en: str


class Entry(BaseModel):
    bpf: str
    version: int
    title_ja: str
    title_en: str
    description_ja: str
    description_en: str
    task_ja: str
    definer: str
    executors: list[str]
    triggers: list[str]
    svg: str
    linkages: list[Linkage]
    pias: list[PiaLine] = []
    suspended: list[str] = []


def _agencies(d: BpfDefinition, q: QueryStep, catalog: Catalog, lang: str) -> str:
    label = provider_label(d, q)
    if label in catalog.orgs:
        return str(getattr(catalog.orgs[label], lang))
    if label == "(its own records)":
        return "実施機関自身の記録" if lang == "ja" else "the executing agency's own records"
    name = label.strip("()").removeprefix("input ")
    spec = d.inputs.get(name)
    role = spec.role if spec else None
    candidates = [
        getattr(o, lang)
        for o in catalog.orgs.values()
        if q.query.info in o.serves and (role is None or role in o.roles)
    ]
    lead = "申請に応じた機関: " if lang == "ja" else "the agency named in the application: "
    return lead + ("、" if lang == "ja" else ", ").join(candidates)


def pia_lines(
    d: BpfDefinition, catalog: Catalog, controls: ControlsIndex, at: dt.date
) -> list[PiaLine]:
    """The PIA of every org that runs the flow and of every provider it names itself."""
    orgs = [o for e in d.owners.executors for o in catalog.orgs_of(e)]
    orgs += [
        s.query.provider
        for s in walk(list(d.steps))
        if isinstance(s, QueryStep) and s.query.provider in catalog.orgs
    ]
    lines = []
    for org in dict.fromkeys(orgs):
        pia = controls.pia(org, d.task)
        lapse = pia.lapse(at) if pia else "none recorded"
        if pia is None:
            ja, en = "評価の記録なし", "no PIA recorded"
        else:
            ja = f"{LEVEL_JA[pia.level]} {pia.approved_on} 承認・{pia.review_due} 見直し"
            en = f"{pia.level} assessment approved {pia.approved_on}, review due {pia.review_due}"
            if lapse:
                ja, en = f"{ja}(効力なし)", f"{en} ({lapse})"
        o = catalog.orgs[org]
        lines.append(
            PiaLine(org_ja=o.ja, org_en=o.en, in_force=lapse is None, status_ja=ja, status_en=en)
        )
    return lines


def stopping(d: BpfDefinition, catalog: Catalog, controls: ControlsIndex) -> list[str]:
    """The suspensions in force that stop this flow's version or an org that runs it."""
    found = [controls.bpf_suspension(d.bpf, d.version)]
    found += [
        controls.requester_suspension(o) for e in d.owners.executors for o in catalog.orgs_of(e)
    ]
    return [
        f"{s.what}: {s.reason} ({stamp(s.at, '%Y-%m-%d %H:%M', dt.UTC)} UTC)"
        for s in dict.fromkeys(f for f in found if f is not None)
    ]


def entry(
    d: BpfDefinition,
    catalog: Catalog,
    index: WhitelistIndex,
    at: dt.date,
    controls: ControlsIndex | None = None,
) -> Entry:
    graph = build(d, catalog, index, at)
    linkages = []
    for s in walk(list(d.steps)):
        if isinstance(s, QueryStep):
            item = catalog.info_items.get(s.query.info)
            linkages.append(
                Linkage(
                    step=s.id,
                    info_ja=item.ja if item else s.query.info,
                    info_en=item.en if item else s.query.info,
                    agencies_ja=_agencies(d, s, catalog, "ja"),
                    agencies_en=_agencies(d, s, catalog, "en"),
                    legal=graph.nodes[s.id].legal,
                )
            )
        elif isinstance(s, ActStep):
            action = catalog.actions.get(s.act.action)
            partner = catalog.orgs.get(partner_label(s))
            private = partner is not None and partner.kind == "private"
            linkages.append(
                Linkage(
                    step=s.id,
                    info_ja=action.ja if action else s.act.action,
                    info_en=action.en if action else s.act.action,
                    agencies_ja=(partner.ja + ("（民間事業者）" if private else ""))
                    if partner
                    else partner_label(s),
                    agencies_en=(partner.en + (" (a private company)" if private else ""))
                    if partner
                    else partner_label(s),
                    legal=graph.nodes[s.id].legal,
                    act=True,
                    sends=sorted(s.act.send),
                    consent=s.act.consent is not None,
                )
            )
    task = catalog.tasks.get(d.task)
    return Entry(
        bpf=d.bpf,
        version=d.version,
        title_ja=d.title.ja,
        title_en=d.title.en,
        description_ja=d.description.ja if d.description else "",
        description_en=d.description.en if d.description else "",
        task_ja=task.ja if task else d.task,
        definer=str(catalog.orgs[d.owners.definer].ja)
        if d.owners.definer in catalog.orgs
        else d.owners.definer,
        executors=[
            f"{role} (role)" if (role := role_of(e)) is not None else e for e in d.owners.executors
        ],
        triggers=d.trigger_kinds(),
        svg=to_svg(graph),
        linkages=linkages,
        pias=pia_lines(d, catalog, controls, at) if controls is not None else [],
        suspended=stopping(d, catalog, controls) if controls is not None else [],
    )


def render(
    definitions: list[BpfDefinition],
    catalog: Catalog,
    index: WhitelistIndex,
    controls: ControlsIndex | None = None,
) -> str:
    """The page; with ``controls``, each flow's PIAs and the suspensions that stop it."""
    at = japan_today()
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())
    entries = [entry(d, catalog, index, at, controls) for d in definitions]
    for e in entries:  # Graphviz's own SVG, embedded as markup
        e.svg = Markup(e.svg[e.svg.find("<svg") :])
    return env.get_template("catalog.html").render(entries=entries, generated=at.isoformat())
