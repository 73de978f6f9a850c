"""``renkei records``: the access records each keeper holds: list them, verify their hash chains
and checkpoints, sign checkpoints, and a citizen's own view of every exchange of their data."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from renkei.app.cli.runtime import database, run_async
from renkei.kernel import keys
from renkei.kernel import records as records_store
from renkei.kernel.settings import get_settings
from whitelist.catalog import default_catalog

records_app = typer.Typer(
    help="Access records: list, verify, sign, read your own.", no_args_is_help=True
)

KEY_FILE_HELP = (
    "the org's key file (default: ORG.json in the keys directory): its own private keys, the"
    " credential `--as` acts with; a file that is another org's is refused"
)


def _org_keys(as_org: str, key_file: Path | None) -> keys.OrgKeys:
    """The key file ``--as ORG`` acts with: ``key_file`` or the org's own in the keys directory;
    :class:`ValueError` (the reason) if it is missing, unreadable or another org's."""
    path = key_file or keys.org_keys_path(get_settings(), as_org)
    if not path.exists():
        if key_file is None:
            raise ValueError(
                f"no key file for {as_org} at {path}: the platform issues it"
                f" (renkei keys issue {as_org}), or name it with --key-file"
            )
        raise ValueError(f"--key-file {path}: no such file")
    try:
        found = keys.OrgKeys.model_validate_json(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(
            f"--key-file {path}: not an org's key file ({type(err).__name__})"
        ) from None
    if found.org != as_org:
        raise ValueError(f"the key file {path} is {found.org}'s, not {as_org}'s: --as must match")
    return found


@records_app.command("list")
@run_async
async def records_list(
    keeper: Annotated[
        str | None, typer.Option(help="the keeping party: an org id, or 'hub'")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="the keeper's code for the subject")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    bpf: Annotated[
        str | None, typer.Option(help="BPF id (with the child flows that ran for it)")
    ] = None,
    workflow: Annotated[
        str | None, typer.Option(help="workflow id (with its child flows' records)")
    ] = None,
    limit: int = 100,
) -> None:
    """List access records, as their keepers hold them, each with the attempt's outcome."""
    async with database(get_settings()) as pool:
        rows = await records_store.query(
            pool,
            keeper=keeper,
            provider=provider,
            subject_code=subject,
            bpf=bpf,
            workflow_id=workflow,
            limit=limit,
            with_children=True,
        )
        ended = await records_store.outcomes(pool, [r.attempt_key for r in rows])
    for r in rows:
        # the hub's decision, then what became of the attempt (pending: no outcome recorded)
        typer.echo(
            f"{r.keeper}#{r.chain_seq or '-'}\t{r.decided_at:%Y-%m-%d %H:%M:%S}\t{r.outcome}\t{r.requester}→{r.provider}\t"
            f"{r.info}\t{r.task}\t{r.legal_reference or '-'}\t{r.bpf} v{r.bpf_version}\t{r.workflow_id}\t{r.step}\t"
            f"{records_store.outcome_of(r.outcome, ended.get(r.attempt_key))}"
        )
    typer.echo(f"{len(rows)} records", err=True)


@records_app.command("verify")
@run_async
async def records_verify(
    keeper: Annotated[list[str] | None, typer.Option(help="only these keepers' chains")] = None,
    against: Annotated[
        Path | None,
        typer.Option(
            help="heads exported earlier (renkei records heads): check they are still there"
        ),
    ] = None,
    as_org: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="verify as this org: trust the hub key pinned in its key file (--key-file),"
            " not the hub's own file",
        ),
    ] = None,
    key_file: Annotated[Path | None, typer.Option(help=KEY_FILE_HELP)] = None,
) -> int:
    """Walk every keeper's chain: hashes, each record's writer's signature, the witnesses'
    checkpoints, chains that vanished; report the first broken link of each."""
    settings = get_settings()
    if key_file is not None and as_org is None:
        typer.echo("error: --key-file is an org's: give --as ORG with it", err=True)
        return 2
    try:
        hub = (
            _org_keys(as_org, key_file).hub_verifier()
            if as_org
            else keys.load(settings).signer().public_key()
        )
    except ValueError as err:  # no key file for that org here, or another org's
        typer.echo(f"error: {err}", err=True)
        return 2
    try:
        heads = _kept_heads(against.read_text()) if against else []
    except (OSError, ValueError) as err:  # unreadable, not JSON, or not a list of heads
        typer.echo(f"error: --against {against}: {err}", err=True)
        return 2
    async with database(settings) as pool:
        result = await records_store.verify(pool, hub, keeper, against=heads)
    typer.echo(
        f"{result.records} records in {result.keepers} chains, {result.checkpoints} checkpoints"
    )
    for b in result.breaks:
        typer.echo(f"BROKEN {b.keeper} at record {b.chain_seq}: {b.problem}", err=True)
    if result.ok:
        typer.echo("every chain is intact")
    return 0 if result.ok else 1


@records_app.command("reconcile")
@run_async
async def records_reconcile(
    provider: Annotated[
        list[str] | None, typer.Option(help="only the attempts these orgs answered")
    ] = None,
    settled: Annotated[
        int,
        typer.Option(
            min=0,
            help="only answers at least this many minutes old (a flow tells the hub a"
            " moment later)",
        ),
    ] = 10,
    as_org: Annotated[
        str | None,
        typer.Option("--as", help="as this org: trust the hub key pinned in its key file"),
    ] = None,
) -> int:
    """Set the providers' own receipts of what they answered beside the hub's outcomes (the
    executors' word, ``provided`` only on a receipt): list every attempt where they disagree,
    such as an answered exchange the executor reported as failed, or never reported."""
    settings = get_settings()
    try:
        hub = (
            keys.load_org(settings, as_org).hub_verifier()
            if as_org
            else keys.load(settings).signer().public_key()
        )
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    async with database(settings) as pool:
        found = await records_store.reconcile(
            pool, hub, settled=dt.timedelta(minutes=settled), providers=provider or None
        )
    for m in found:
        typer.echo(f"{m.attempt_key}\t{m.requester}→{m.provider}\t{m.reported}\t{m.problem}")
    if not found:
        typer.echo("the providers' receipts and the hub's outcomes agree")
    return 0 if not found else 1


def _kept_heads(text: str) -> list[records_store.Head]:
    """The heads a copy kept outside the database holds: a JSON list of heads (`records heads`),
    or a witness's JSON lines of checkpoints (`records checkpoint --keep`); per chain, the
    furthest one (the chain must still reach it, with the same hash)."""
    stripped = text.lstrip()
    found = (
        json.loads(stripped)
        if stripped.startswith("[")
        else [json.loads(line) for line in text.splitlines() if line.strip()]
    )
    if not isinstance(found, list):
        raise ValueError("not a list of heads")
    furthest: dict[str, records_store.Head] = {}
    for item in found:
        head = records_store.Head.model_validate(item, strict=False)
        if head.keeper not in furthest or head.chain_seq > furthest[head.keeper].chain_seq:
            furthest[head.keeper] = head
    return list(furthest.values())


@records_app.command("checkpoint")
@run_async
async def records_checkpoint(
    as_org: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="witness as this org, signing with its own key file (--key-file): the hub's"
            " chain and its own; default: as the hub (every org's chain)",
        ),
    ] = None,
    key_file: Annotated[Path | None, typer.Option(help=KEY_FILE_HELP)] = None,
    keep: Annotated[
        Path | None,
        typer.Option(
            help="also append what was signed to this file (JSON lines): the witness's own copy,"
            " outside the platform's database, for `records verify --against`"
        ),
    ] = None,
) -> None:
    """Sign, as a witness, the heads of the chains this party witnesses (run it periodically)."""
    settings = get_settings()
    if key_file is not None and as_org is None:
        typer.echo("error: --key-file is an org's: give --as ORG with it", err=True)
        raise typer.Exit(2)
    try:
        signer = (
            records_store.RecordSigner(as_org, _org_keys(as_org, key_file).signer())
            if as_org
            else records_store.RecordSigner(records_store.HUB, keys.load(settings).signer())
        )
    except ValueError as err:  # no key file for that org here, or another org's
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    async with database(settings) as pool:
        made = await records_store.checkpoint(pool, signer)
    if keep is not None:
        try:
            keep.parent.mkdir(parents=True, exist_ok=True)
            with keep.open("a", encoding="utf-8") as copy:
                copy.writelines(cp.model_dump_json() + "\n" for cp in made)
                copy.flush()
                os.fsync(copy.fileno())
        except OSError as err:
            typer.echo(
                f"error: --keep {keep}: {err.strerror} (the checkpoints are signed)", err=True
            )
            raise typer.Exit(1) from None
    for cp in made:
        typer.echo(f"{cp.keeper}\t#{cp.chain_seq}\t{cp.record_hash[:16]}…")
    typer.echo(f"{len(made)} checkpoints signed by {signer.party}", err=True)


@records_app.command("heads")
@run_async
async def records_heads() -> None:
    """Print every chain's head as JSON, to keep outside the platform's database (an auditor's
    copy); `renkei records verify --against FILE` checks the chains still reach them."""
    async with database(get_settings()) as pool:
        found = await records_store.heads(pool)
    typer.echo(json.dumps([h.model_dump() for h in found], indent=2))


@records_app.command("mine")
@run_async
async def records_mine(
    portal_code: Annotated[
        str,
        typer.Option(
            prompt=True, hide_input=True, envvar="RENKEI_PORTAL_CODE", help="your portal code"
        ),
    ],
    agency: Annotated[str | None, typer.Option(help="only exchanges with this org")] = None,
    since: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    until: Annotated[str | None, typer.Option(help="YYYY-MM-DD, inclusive")] = None,
    lang: Annotated[str, typer.Option(help="ja or en")] = "ja",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> int:
    """Every exchange of your data, newest first, as the hub recorded it."""
    from pydantic import ValidationError

    from renkei.app.citizen import NotACitizen, Party, RecordFilter, records_of
    from renkei.kernel.pseudonyms import Pseudonyms

    settings = get_settings()
    try:
        where = RecordFilter.model_validate({"agency": agency, "since": since, "until": until})
    except ValidationError as err:
        problems = "; ".join(
            f"--{e['loc'][0]}: {e['msg']}" for e in err.errors(include_input=False)
        )
        typer.echo(f"error: {problems}", err=True)
        return 2
    async with database(settings) as pool:
        k = keys.load(settings)
        hub = Pseudonyms(pool, k.hub_key)
        try:
            found = await records_of(
                pool,
                hub,
                default_catalog(),
                portal_code.strip(),
                where,
                hub=k.signer().public_key(),
            )
        except NotACitizen as err:
            typer.echo(f"error: {err}", err=True)
            return 1
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in found], ensure_ascii=False))
        return 0

    def name(p: Party) -> str:
        return p.ja if lang == "ja" else p.en

    for r in found:
        typer.echo(
            f"{r.at.astimezone(dt.timezone(dt.timedelta(hours=9))):%Y-%m-%d %H:%M}\t{r.outcome}\t"
            f"{name(r.requester)} ← {name(r.provider)}\t{name(r.info)}\t{name(r.task)}\t"
            f"{r.legal_reference or '-'}\t{r.bpf} v{r.bpf_version}\t{r.application}"
        )
    typer.echo(f"{len(found)} records", err=True)
    return 0
