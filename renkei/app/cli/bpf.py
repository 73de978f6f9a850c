"""``renkei bpf``: business process flow definitions: validate, list, draw, import from BPMN,
the format's JSON Schema, the HTML catalog, and each version's lifecycle (submit, approve,
operate, retire, history)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer

from renkei.app import approvals
from renkei.app.actors import NotEntitled, NotSignedIn, signed_in
from renkei.app.bootstrap import check_file, known_definitions
from renkei.app.cli.runtime import database, run_async
from renkei.bpf import registry
from renkei.bpf.loader import BpfFileError, LoadedBpf, load_file
from renkei.bpf.pias import pia_issues
from renkei.bpf.validation import KnownBpfs
from renkei.kernel import keys
from renkei.kernel.settings import get_settings
from whitelist import controls_store, store
from whitelist.catalog import default_catalog
from whitelist.decide import japan_today
from whitelist.orgs import load_orgs

bpf_app = typer.Typer(help="Business process flow definitions.", no_args_is_help=True)


@bpf_app.command("validate")
@run_async
async def bpf_validate(
    files: Annotated[list[Path], typer.Argument(help="BPF YAML files")],
    at: Annotated[
        str | None, typer.Option("--at", help="check the whitelist as of this date")
    ] = None,
    offline: Annotated[
        bool, typer.Option(help="use the shipped whitelist instead of the store")
    ] = False,
) -> int:
    """Validate BPF files: schema, references, expressions, whitelist conformance; and (not
    --offline) a warning for each executor or named provider without a PIA in force."""
    from whitelist.decide import WhitelistIndex
    from whitelist.local import all_rows, all_sources

    settings = get_settings()
    registered = KnownBpfs()
    pias = None  # the PIA registry (and suspensions), from the store: not offline
    catalog = default_catalog()  # offline: the shipped orgs; else the org registry's
    if offline:
        idx = WhitelistIndex(all_rows(default_catalog()), sources=all_sources())
    else:
        async with database(settings) as pool:
            idx = await store.load_index(pool)
            registered = await registry.known(pool)
            pias = await controls_store.load_controls(
                pool, hub=keys.load(settings).signer().public_key()
            )
            if live := await load_orgs(pool):
                catalog = catalog.model_copy(update={"orgs": live})
        if not len(idx):
            idx = WhitelistIndex(all_rows(default_catalog()), sources=all_sources())
    # What a `call` may name: every registered version with its state (a call of one that does
    # not operate is flagged), the shipped samples, the files given (each validated with the
    # others: a flow and the one it calls, or two flows one event starts).
    known = known_definitions(settings.definitions_dir, registered=registered)
    for f in files:
        with contextlib.suppress(BpfFileError):
            d = load_file(f).definition
            if known.state(d.bpf, d.version) is None:
                known.add(d)
    try:
        day = dt.date.fromisoformat(at) if at else None
    except ValueError:
        typer.echo("error: --at is a day, YYYY-MM-DD", err=True)
        return 2
    failed = 0
    for f in files:
        loaded, issues = check_file(f, idx, day, known=known, catalog=catalog)
        if pias is not None and isinstance(loaded, LoadedBpf):
            issues += pia_issues(loaded, default_catalog(), pias, day or japan_today())
        errors = [i for i in issues if i.severity == "error"]
        for i in issues:
            typer.echo(f"{i.severity}: {i}", err=i.severity == "error")
        if errors or loaded is None:
            failed += 1
        else:
            typer.echo(f"ok: {f}")
    return 1 if failed else 0


@bpf_app.command("list")
@run_async
async def bpf_list() -> None:
    """List registered BPF versions."""
    async with database(get_settings()) as pool:
        for r in await registry.listing(pool):
            typer.echo(
                f"{r.bpf}\tv{r.version}\t{r.state}\t{r.task}\t{r.content_hash[:19]}…\t{r.title}"
            )


async def _definition(pool: asyncpg.Pool, ref: str, version: int | None) -> Any:
    """The registered version of a BPF id."""
    try:
        found = await registry.fetch(pool, ref, version, "test")
    except registry.DefinitionAltered as err:
        raise typer.BadParameter(str(err)) from None
    if found is None:
        raise typer.BadParameter(f"{ref} is not a registered BPF (nor a .yaml file)")
    return found.definition


@bpf_app.command("render")
@run_async
async def bpf_render(
    bpf: Annotated[str, typer.Argument(help="a registered BPF id, or a definition file")],
    format: Annotated[str, typer.Option("--format", help="mermaid, svg, bpmn or dot")] = "mermaid",
    version: int | None = None,
    out: Annotated[Path | None, typer.Option(help="write here instead of standard output")] = None,
) -> None:
    """Draw a BPF: Mermaid flowchart, SVG (Graphviz), BPMN 2.0 XML with diagram."""
    from renkei.bpf.render import RendererMissing, build, to_bpmn, to_dot, to_mermaid, to_svg

    writers = {"mermaid": to_mermaid, "svg": to_svg, "bpmn": to_bpmn, "dot": to_dot}
    if format not in writers:
        typer.echo(f"error: --format is one of {', '.join(writers)}", err=True)
        raise typer.Exit(2)

    path = Path(bpf)
    from_file = load_file(path).definition if path.suffix in (".yaml", ".yml") else None
    async with database(get_settings()) as pool:
        d = from_file or await _definition(pool, bpf, version)
        graph = build(d, default_catalog(), await store.load_index(pool))
    try:
        text = writers[format](graph)
    except RendererMissing as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(3) from None
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")


@bpf_app.command("import")
def bpf_import(path: Path) -> None:
    """Read a BPMN 2.0 process (tasks, gateways, events as renkei draws them) into a BPF draft."""
    from ruamel.yaml import YAML

    from renkei.bpf.loader import parse_text
    from renkei.bpf.render import BpmnImportError, from_bpmn

    try:
        draft = from_bpmn(path.read_text(encoding="utf-8"))
    except BpmnImportError as err:
        typer.echo(f"{path}: {err}", err=True)
        raise typer.Exit(1) from None
    yaml = YAML()
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(draft, buffer)
    try:
        parse_text(buffer.getvalue(), f"{path.stem}.yaml")
    except BpfFileError as err:
        for i in err.issues:
            typer.echo(f"to fix in the draft: {i}", err=True)
    typer.echo(buffer.getvalue(), nl=False)


@bpf_app.command("schema")
def bpf_schema() -> None:
    """The JSON Schema of the BPF format, for editors (e.g. yaml-language-server)."""
    from renkei.bpf.models import BpfDefinition

    schema = BpfDefinition.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "urn:renkei:bpf-schema:1"
    typer.echo(json.dumps(schema, ensure_ascii=False, indent=2))


@bpf_app.command("catalog")
@run_async
async def bpf_catalog(
    out: Annotated[Path, typer.Option(help="the HTML file to write")] = Path("bpf-catalog.html"),
) -> None:
    """Write the static HTML catalog of the operating BPFs (purpose, diagram, data asked for,
    each party's PIA, suspensions)."""
    from renkei.app.catalog_page import render

    async with database(get_settings()) as pool:
        defs = await registry.runnable(pool, "operation")
        index = await store.load_index(pool)
        controls = await controls_store.load_controls(
            pool, hub=keys.load(get_settings()).signer().public_key()
        )
    html = render([d.definition for d in defs], default_catalog(), index, controls)
    out.write_text(html, encoding="utf-8")
    typer.echo(f"wrote {out}")


async def _transition(action: registry.Action, bpf: str, version: int, note: str | None) -> int:
    """Make one transition as the signed-in operator: its org, in its role."""
    settings = get_settings()
    needed = registry.TRANSITIONS[action][2]
    async with database(settings) as pool:
        try:
            actor = await signed_in(pool)
            if actor.role != needed:
                raise NotEntitled(f"'{action}' takes a {needed}; you are {actor}")
            catalog = default_catalog().model_copy(
                update={"orgs": await load_orgs(pool) or default_catalog().orgs}
            )
            t = await registry.transition(
                pool,
                bpf,
                version,
                action,
                actor.party,
                conformance_body=settings.conformance_body,
                actor_roles=catalog.org_roles(actor.party),
                note=note,
                catalog=catalog,
                operator=actor.name,
                approval_signer=approvals.signer(settings) if action == "approve" else None,
                operation_signer=(
                    approvals.operation_signer(settings) if action == "operate" else None
                ),
            )
        except (NotSignedIn, NotEntitled, registry.TransitionRefused) as err:
            typer.echo(f"refused: {err}", err=True)
            return 1
    if t.pending:
        typer.echo(
            f"{t.bpf} v{t.version}: {action} by {t.actor} recorded; still {t.from_state}, awaiting"
            f" {', '.join(t.pending)}"
        )
        return 0
    typer.echo(
        f"{t.bpf} v{t.version}: {t.from_state} → {t.to_state} by {t.actor} ({t.actor_role},"
        f" operator {t.operator})"
    )
    if action == "operate":
        typer.echo(f"operating for {t.actor} only: each executor puts a version into operation")
    return 0


_SIGNED_IN = " Acts as the signed-in operator (RENKEI_OPERATOR_TOKEN): its org, in its role."


@bpf_app.command(
    "submit",
    help="draft → conformance-passed, by the definer (each co-definer"
    " too), with a passing conformance report." + _SIGNED_IN,
)
@run_async
async def bpf_submit(bpf: str, version: int, note: str | None = None) -> int:
    return await _transition("submit", bpf, version, note)


@bpf_app.command(
    "approve", help="conformance-passed → approved, by the conformance body." + _SIGNED_IN
)
@run_async
async def bpf_approve(bpf: str, version: int, note: str | None = None) -> int:
    return await _transition("approve", bpf, version, note)


@bpf_app.command("operate", help="approved → operating, by an executor." + _SIGNED_IN)
@run_async
async def bpf_operate(bpf: str, version: int, note: str | None = None) -> int:
    """approved → operating, by the signed-in operator's org (an executor), for itself alone
    (every other executor of the version puts it into operation for itself: operating →
    operating)."""
    return await _transition("operate", bpf, version, note)


@bpf_app.command(
    "retire", help="operating → retired, by the definer (each co-definer too)." + _SIGNED_IN
)
@run_async
async def bpf_retire(bpf: str, version: int, note: str | None = None) -> int:
    return await _transition("retire", bpf, version, note)


@bpf_app.command("transfer")
@run_async
async def bpf_transfer(
    bpf: str,
    to: Annotated[str, typer.Option("--to", help="the org that defines it from now on")],
    reason: Annotated[str, typer.Option(help="why (recorded)")],
    co_definer: Annotated[
        list[str] | None,
        typer.Option(help="the co-definers from now on (default: kept)"),
    ] = None,
) -> int:
    """Hand a BPF over to another definer (its next versions name it), as its current definer
    (the signed-in operator, a definer of that org); recorded with the reason."""
    async with database(get_settings()) as pool:
        known = await load_orgs(pool) or default_catalog().orgs
        unknown = [o for o in (to, *(co_definer or [])) if o not in known]
        if unknown:
            typer.echo(f"error: unknown org {unknown[0]!r}", err=True)
            return 2
        try:
            actor = await signed_in(pool)
            if actor.role != "definer":
                raise NotEntitled(f"a transfer takes the definer; you are {actor}")
            t = await registry.transfer(
                pool,
                bpf,
                to,
                actor=actor.party,
                operator=actor.name,
                reason=reason,
                co_definers=co_definer,
            )
        except (NotSignedIn, NotEntitled, registry.TransitionRefused) as err:
            typer.echo(f"refused: {err}", err=True)
            return 1
    typer.echo(f"{t.bpf}: definer {t.from_definer} → {t.to_definer}")
    return 0


@bpf_app.command("history")
@run_async
async def bpf_history(bpf: str, version: int) -> int:
    """Every lifecycle transition of one version: who, in which role, when."""
    async with database(get_settings()) as pool:
        if await registry.state_of(pool, bpf, version) is None:
            typer.echo(f"error: {bpf} version {version} is not registered", err=True)
            return 1
        for t in await registry.history(pool, bpf, version):
            typer.echo(
                f"{t.at:%Y-%m-%d %H:%M:%S}\t{t.from_state} → {t.to_state}\t{t.actor} ({t.actor_role})"
                + (f"\toperator {t.operator}" if t.operator else "")
                + (f"\t{t.note}" if t.note else "")
            )
        for a in await approvals.approvals(pool, bpf, version):
            typer.echo(
                f"certificate\t{a.signer} approves content {a.content_hash} on report"
                f" {a.report_hash}" + (f"\toperator {a.operator}" if a.operator else "")
            )
        for x in await registry.transfers(pool, bpf):
            typer.echo(
                f"{x.at:%Y-%m-%d %H:%M:%S}\ttransfer {x.from_definer} → {x.to_definer}"
                f"\toperator {x.operator}\t{x.reason}"
            )
        if await registry.state_of(pool, bpf, version) == "operating":
            operators = await registry.operated_by(pool, bpf, version)
            typer.echo(f"operating for: {', '.join(operators)}")
    return 0


@bpf_app.command("verify")
@run_async
async def bpf_verify(bpf: str, version: int) -> int:
    """Check a version's approval certificates (the conformance body's registered key, over the
    registered content and a passing report kept for it) and each executor's signature putting
    it into operation."""
    from activities.approved import why_not_operated

    settings = get_settings()
    async with database(settings) as pool:
        if await registry.state_of(pool, bpf, version) is None:
            typer.echo(f"error: {bpf} version {version} is not registered", err=True)
            return 1
        found = await approvals.approvals(pool, bpf, version)
        if not found:
            typer.echo(f"{bpf} v{version}: no approval certificate", err=True)
            return 1
        bad = 0
        for a in found:
            why = await approvals.verify(pool, settings, a)
            bad += why is not None
            typer.echo(
                f"{'OK ' if why is None else 'BAD'}  {a.signer}: content {a.content_hash},"
                f" report {a.report_hash}" + (f" — {why}" if why else "")
            )
        content = await pool.fetchval(
            "SELECT content_hash FROM registry.bpf_versions WHERE bpf = $1 AND version = $2",
            bpf,
            version,
        )
        hub = keys.load(settings).signer().public_key()
        for executor in await registry.operated_by(pool, bpf, version):
            why = await why_not_operated(pool, hub, bpf, version, content, executor)
            bad += why is not None
            typer.echo(
                f"{'OK ' if why is None else 'BAD'}  {executor}: puts it into operation"
                + (f" — {why}" if why else "")
            )
    return 1 if bad else 0


@bpf_app.command("add-scenarios")
@run_async
async def bpf_add_scenarios(
    bpf: str,
    version: int,
    file: Annotated[Path, typer.Argument(help="a scenario set (the kit's format) for this BPF")],
) -> int:
    """Add scenarios to a version's kit, as the conformance body: `renkei conformance BPF
    --version VERSION` runs them with the shipped set."""
    from renkei.app.kit.scenarios import load_scenarios, scenarios_for

    try:
        added = load_scenarios(file)
    except (OSError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    try:
        shipped = scenarios_for(bpf)
    except (FileNotFoundError, ValueError):
        shipped = None
    async with database(get_settings()) as pool:
        try:
            actor = await signed_in(pool)
            if actor.role != "conformance-body":
                raise NotEntitled(f"adding to a kit takes the conformance body; you are {actor}")
            names = await approvals.add_scenarios(
                pool, bpf, version, added, shipped, actor.party, actor.name
            )
        except (NotSignedIn, NotEntitled, approvals.ScenarioClash) as err:
            typer.echo(f"refused: {err}", err=True)
            return 1
    typer.echo(f"{bpf} v{version}: kit now also runs {', '.join(names)}")
    return 0
