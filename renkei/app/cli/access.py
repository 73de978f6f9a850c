"""Who may get at what: operators' codec tokens (``renkei operators``), the hub's keys
(``renkei keys``) and agencies' API tokens (``renkei agencies``)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Annotated

import typer

from renkei.app.cli.runtime import database, org_known, run_async
from renkei.kernel import holds, keys, parties
from renkei.kernel.settings import get_settings
from whitelist.catalog import default_catalog
from whitelist.decide import JST

operators_app = typer.Typer(
    help="Operators allowed to decrypt payloads through the codec server.", no_args_is_help=True
)
keys_app = typer.Typer(help="The hub's keys, and each org's key file.", no_args_is_help=True)
holds_app = typer.Typer(
    help="Disclosure holds: requested by an executor, approved by a platform operator.",
    no_args_is_help=True,
)
agencies_app = typer.Typer(help="Agencies' access to the HTTP API.", no_args_is_help=True)


@operators_app.command("add")
@run_async
async def operators_add(
    name: str,
    party: Annotated[
        str,
        typer.Option(help="the party the operator acts for: hub, or an org (reads only its own)"),
    ] = "hub",
    role: Annotated[
        str | None,
        typer.Option(
            help="what it does: platform-operator (the hub's), conformance-body, or an org's"
            " definer or executor (default: platform-operator for the hub, executor for an org)"
        ),
    ] = None,
) -> int:
    """Create an operator (or issue a new token); the token is printed once."""
    from renkei.app.actors import ACTOR_ROLES, party_problem
    from renkei.app.web.codec_server import add_operator
    from whitelist.orgs import load_orgs

    settings = get_settings()
    role = role or ("platform-operator" if party == "hub" else "executor")
    if role not in ACTOR_ROLES:
        typer.echo(f"error: --role {role!r}: one of {', '.join(ACTOR_ROLES)}", err=True)
        return 2
    async with database(settings) as pool:
        known = await load_orgs(pool) or default_catalog().orgs
        if party != "hub" and party != settings.conformance_body and party not in known:
            typer.echo(f"error: unknown party {party!r}", err=True)
            return 2
        if problem := party_problem(settings, role, party, known):
            typer.echo(f"error: --role {role}: {problem}", err=True)
            return 2
        token = await add_operator(pool, name, party, role)
    typer.echo(token)
    typer.echo(
        f"token for {name}: keep it secret. Sign in at {get_settings().codec_endpoint}/login for"
        " the Web UI, or pass --codec-auth 'Bearer <token>' to the temporal CLI.",
        err=True,
    )
    return 0


@operators_app.command("revoke")
@run_async
async def operators_revoke(name: str) -> int | None:
    """Revoke an operator's token."""
    from renkei.app.web.codec_server import revoke_operator

    async with database(get_settings()) as pool:
        revoked = await revoke_operator(pool, name)
    if not revoked:
        typer.echo(f"no active operator {name!r}", err=True)
        return 1
    typer.echo(f"revoked {name}")
    return None


@keys_app.command("new")
def keys_new(
    file: Annotated[Path, typer.Argument(help="where to write the new keys (must not exist)")],
) -> None:
    """Create an installation's keys (hub key, payload key ring, checkpoint key) in FILE, mode
    0600: the secret every process of one deployment mounts as RENKEI_KEYS_FILE."""
    if file.exists():
        typer.echo(f"error: {file} exists; keys are never overwritten", err=True)
        raise typer.Exit(2)
    keys.save(file, keys.new_keys())
    typer.echo(f"keys written to {file}")


@keys_app.command("hub-public")
def keys_hub_public() -> None:
    """Print the hub's public keys (JSON): what an org pins when it makes its own keys."""
    typer.echo(keys.load(get_settings()).public("hub").model_dump_json(indent=2))


@keys_app.command("request")
def keys_request(
    org: str,
    hub_public: Annotated[
        Path, typer.Option(help="the hub's public keys, from `renkei keys hub-public`")
    ],
    out: Annotated[
        Path | None, typer.Option(help="the org's key file (default <keys dir>/<org>.json)")
    ] = None,
) -> None:
    """Make ORG's keys on ORG's own side and print the public part to send to the platform
    (`renkei keys register ORG --public FILE`): the private keys never leave this machine."""
    try:
        hub = keys.PublicKeys.model_validate_json(hub_public.read_text())
    except (OSError, ValueError) as err:
        typer.echo(f"error: {hub_public} is not the hub's public keys: {err}", err=True)
        raise typer.Exit(2) from None
    path = out or keys.org_keys_path(get_settings(), org)
    if path.exists():
        typer.echo(f"error: {path} exists; keys are never overwritten", err=True)
        raise typer.Exit(2)
    made = keys.request(org, hub)
    keys.save(path, made)
    typer.echo(made.public(org).model_dump_json(indent=2))
    typer.echo(f"{org}: private keys in {path} (keep them); send the JSON above", err=True)


@keys_app.command("register")
@run_async
async def keys_register(
    org: str,
    public: Annotated[Path, typer.Option(help="the org's public keys (`renkei keys request`)")],
) -> int:
    """Register ORG's public keys, made on ORG's side, signed by the hub."""
    if org not in default_catalog().orgs:
        typer.echo(f"error: unknown org {org!r}", err=True)
        return 2
    try:
        sent = keys.PublicKeys.model_validate_json(public.read_text())
        sent.verifier(), sent.sealer()  # both must be keys
    except (OSError, ValueError) as err:
        typer.echo(f"error: {public} is not an org's public keys: {err}", err=True)
        return 2
    if sent.party != org:
        typer.echo(f"error: {public} holds {sent.party}'s keys, not {org}'s", err=True)
        return 2
    settings = get_settings()
    async with database(settings) as pool:
        await parties.register(pool, keys.load(settings).signer(), sent)
    typer.echo(
        f"{org}: public keys registered (signing {sent.signing_id}, sealing {sent.sealing_id})"
    )
    return 0


@keys_app.command("revoke")
@run_async
async def keys_revoke(
    org: str,
    reason: Annotated[str, typer.Option(help="why (kept, signed, in the registry)")],
    since: Annotated[
        dt.datetime | None,
        typer.Option(
            help="revoke from this moment (ISO 8601, with its offset): when the key is known to"
            " have been lost before now. Default: now, by the database's clock"
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="the key id of the signing key to revoke, current or replaced since (one"
            " replaced in a rotation and found lost later). Default: the current keys"
        ),
    ] = None,
) -> int:
    """Revoke ORG's current keys at once (lost or stolen): what they sign from then on does not
    count, whatever time its writer gives it, and no version approval they signed counts at all.
    The revocation is the hub's signed statement and cannot be undone; issue new keys with
    `renkei keys issue ORG --rotate` or `keys register`."""
    if not reason.strip():
        typer.echo("error: --reason must say why", err=True)
        return 2
    if reason.strip() == parties.REPLACED:  # a rotation's own word: its key's approvals count
        typer.echo(f"error: {parties.REPLACED!r} is said by a rotation only", err=True)
        return 2
    if since is not None and since.tzinfo is None:
        typer.echo("error: --since needs its UTC offset (e.g. 2026-11-27T09:00+09:00)", err=True)
        return 2
    settings = get_settings()
    async with database(settings) as pool:
        done = await parties.revoke(
            pool, keys.load(settings).signer(), org, reason=reason.strip(), at=since, signing_id=key
        )
    if not done:
        held = f"no key {key}" if key else "no current keys"
        typer.echo(f"error: {org!r} has {held} in the registry", err=True)
        return 2
    typer.echo(f"{org}: keys revoked ({', '.join(done)})")
    return 0


@keys_app.command("issue")
@run_async
async def keys_issue(
    org: str,
    rotate: Annotated[
        bool, typer.Option(help="replace the org's keys: the old ones are revoked from now")
    ] = False,
    register: Annotated[
        bool,
        typer.Option(
            help="register the public keys now (--no-register: only write the file, before the"
            " database exists; `renkei init` registers it)"
        ),
    ] = True,
) -> int:
    """Issue ORG's key file (its own signing and sealing keys, the payload ring, the hub's
    public key pinned) and register its public keys, signed by the hub."""
    settings = get_settings()
    if not (await org_known(settings, org) if register else org in default_catalog().orgs):
        typer.echo(f"error: unknown org {org!r}", err=True)
        return 2
    path = keys.org_keys_path(settings, org)
    former: list[str] = []
    if rotate and path.exists():
        old = keys.load_org(settings, org)
        former = [old.sealing_key, *old.former_sealing_keys]
        path.rename(path.with_suffix(".revoked.json"))
    try:
        issued = keys.issue(settings, org)
    except keys.KeyMismatch as err:
        typer.echo(f"error: {err}", err=True)
        return 3
    if former:  # payloads written to the old sealing key (flows in flight) still open
        issued = issued.model_copy(update={"former_sealing_keys": former})
        keys.save(path, issued)
    if register:
        async with database(settings) as pool:
            await parties.register(pool, keys.load(settings).signer(), issued.public(org))
    typer.echo(
        f"{org}: key file {path} (give it to {org}'s worker only)"
        + ("; public keys registered" if register else "")
    )
    return 0


TLS_HELP = "the folder of the platform's CA (default: tls/ in the data folder)"


def _tls_folder(folder: Path | None) -> Path:
    return folder or get_settings().data_dir / "tls"


@keys_app.command("tls-ca")
def keys_tls_ca(
    folder: Annotated[Path | None, typer.Option(help=TLS_HELP)] = None,
) -> None:
    """Make the platform's CA for mutual TLS between workers and `renkei gateway` (ca.pem,
    ca.key mode 0600): every party's certificate is issued by it, and the gateway admits no
    other."""
    from renkei.kernel import tls

    try:
        path = tls.make_ca(_tls_folder(folder))
    except tls.TlsError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"CA certificate {path} (give it to every party and the gateway; keep ca.key)")


@keys_app.command("tls-issue")
def keys_tls_issue(
    party: Annotated[str, typer.Argument(help="hub, an org, or gateway (its server certificate)")],
    server_name: Annotated[
        list[str] | None,
        typer.Option(help="gateway only: a DNS name or IP address clients dial it by (repeat)"),
    ] = None,
    folder: Annotated[Path | None, typer.Option(help=TLS_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help="where to write PARTY.pem and PARTY.key")] = None,
) -> None:
    """Issue PARTY's certificate and key (PARTY.pem, PARTY.key mode 0600), signed by the
    platform's CA: the party's identity at the gateway. Give each to that party's processes
    only (RENKEI_TEMPORAL_TLS_CERT / _KEY)."""
    from renkei.kernel import tls

    names = list(server_name or [])
    if party == tls.GATEWAY and not names:
        typer.echo(
            "error: the gateway's certificate needs --server-name (e.g. localhost)", err=True
        )
        raise typer.Exit(2)
    if party != tls.GATEWAY and names:
        typer.echo("error: --server-name is for the gateway's certificate only", err=True)
        raise typer.Exit(2)
    if party not in ("hub", tls.GATEWAY) and party not in default_catalog().orgs:
        typer.echo(f"error: unknown party {party!r}", err=True)
        raise typer.Exit(2)
    try:
        cert, key = tls.issue(_tls_folder(folder), party, server_names=names, out=out)
    except tls.TlsError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{party}: certificate {cert}, key {key} (give them to {party}'s processes only)")


@keys_app.command("tls-revoke")
@run_async
async def keys_tls_revoke(
    cert: Annotated[Path, typer.Argument(help="the certificate to revoke (PEM)")],
    reason: Annotated[str, typer.Option(help="why (kept, signed, in the registry)")],
) -> int:
    """Revoke a party's TLS certificate (lost or stolen): the hub's signed statement, appended
    for good to the registry's revocations; `renkei gateway` refuses the certificate within
    RENKEI_GATEWAY_REVOCATION_REFRESH seconds, and cuts its calls in flight. Then issue the
    party a new certificate."""
    from renkei.kernel import tls

    if not reason.strip():
        typer.echo("error: --reason must say why", err=True)
        return 2
    try:
        pem = cert.read_bytes()
    except OSError as err:
        typer.echo(f"error: {cert} cannot be read: {err.strerror}", err=True)
        return 2
    party, serial = tls.party_of(pem), tls.serial_of(pem)
    if serial is None:
        typer.echo(f"error: {cert} is not a certificate (PEM)", err=True)
        return 2
    if party is None:
        typer.echo(f"error: {cert} names no renkei party (renkei:party:<party>)", err=True)
        return 2
    settings = get_settings()
    async with database(settings) as pool:
        await parties.revoke_certificate(
            pool, keys.load(settings).signer(), party, serial, reason=reason.strip()
        )
    typer.echo(
        f"{party}: certificate {serial:x} revoked (the gateway refuses it from its next read)"
    )
    return 0


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new payload key the active one; older keys keep decrypting. Restart workers after."""
    ring = keys.rotate_codec_key(get_settings())
    typer.echo(f"active payload key: {ring.active} ({len(ring.keys)} keys in the ring)")


@agencies_app.command("token")
@run_async
async def agencies_token(org: str) -> None:
    """Issue an org's API token for the HTTP API (printed once; the old one stops working)."""
    if not await org_known(get_settings(), org):
        typer.echo(f"error: unknown org {org!r}", err=True)
        raise typer.Exit(2)
    from renkei.app.web.api import issue_token

    async with database(get_settings()) as pool:
        token = await issue_token(pool, org)
    typer.echo(token)
    typer.echo(f"API token for {org}: {get_settings().web_base}/api/docs", err=True)


@agencies_app.command("db-login")
@run_async
async def agencies_db_login(
    org: str,
    password_file: Annotated[
        Path,
        typer.Option(
            "--password-file", help="a file holding the login's password (- : standard input)"
        ),
    ],
) -> int:
    """Create ORG's own database login (or set its password): a member of ORG's role only, so
    ORG's processes (`renkei worker agency|control ORG`) cannot leave it for the platform's.
    Any org of the registry, a shipped one or one added since (`renkei orgs add` made its role).
    Run as the database's owner; give ORG's processes a RENKEI_DATABASE_URL with this login."""
    import sys

    from renkei.kernel.db import create_login

    if not await org_known(get_settings(), org):
        typer.echo(f"error: unknown org {org!r}", err=True)
        return 2
    try:
        text = sys.stdin.read() if str(password_file) == "-" else password_file.read_text()
    except OSError as err:
        typer.echo(f"error: cannot read {password_file}: {err.strerror}", err=True)
        return 2
    password = text.strip()
    if len(password) < 16:
        typer.echo("error: the password must be at least 16 characters", err=True)
        return 2
    async with database(get_settings()) as pool:
        try:
            login = await create_login(pool, org, password)
        except LookupError as err:
            typer.echo(f"error: {err}", err=True)
            return 2
    typer.echo(login)
    typer.echo(f"{org}: database login {login} (a member of its own role only)", err=True)
    return 0


@holds_app.command("request")
@run_async
async def holds_request(
    bpf: Annotated[str, typer.Option(help="the flow's BPF")],
    case_ref: Annotated[str, typer.Option("--case-ref", help="the flow's case reference")],
    subject: Annotated[
        str,
        typer.Option(
            help="the person the case is about: their code at your org, as its start names them"
        ),
    ],
    reason: Annotated[str, typer.Option(help=f"one of: {', '.join(sorted(holds.REASONS))}")],
    until: Annotated[str, typer.Option(help="the end of the hold (YYYY-MM-DD, Japan time)")],
) -> int:
    """Request a hold over one case of your org's, as the signed-in executor operator
    (RENKEI_OPERATOR_TOKEN); the case's start may name it once a platform operator approved it."""
    from renkei.app.actors import NotEntitled, NotSignedIn, require, signed_in

    try:
        end = dt.datetime.combine(dt.date.fromisoformat(until), dt.time(), tzinfo=JST)
    except ValueError:
        typer.echo("error: --until is a day, YYYY-MM-DD", err=True)
        return 2
    async with database(get_settings()) as pool:
        try:
            executor = require(await signed_in(pool), "executor").party
            asked = await holds.request(
                pool, executor, bpf, case_ref, reason, end, requested_by=executor, subject=subject
            )
        except (NotSignedIn, NotEntitled, holds.HoldNotApproved) as err:
            typer.echo(f"error: {err}", err=True)
            return 2
    typer.echo(f"{asked.id}\tpending\t{asked.reason} until {asked.until:%Y-%m-%d}")
    return 0


@holds_app.command("pending")
@run_async
async def holds_pending() -> int:
    """The hold requests waiting for approval, oldest first (id, case, the person it is about as
    their code at the executor, reason, end, who asked when), as the signed-in platform
    operator: read one before approving it."""
    from renkei.app.actors import NotSignedIn
    from renkei.app.controls import NotAPlatformOperator, signed_in_platform_operator

    async with database(get_settings()) as pool:
        try:
            await signed_in_platform_operator(pool)
            waiting = await holds.pending(pool)
        except (NotSignedIn, NotAPlatformOperator) as err:
            typer.echo(f"error: {err}", err=True)
            return 2
    for h in waiting:
        typer.echo(
            f"{h.id}\t{h.bpf}/{h.executor}/{h.case_ref}\tabout {h.subject or '(no one named)'}"
            f"\t{h.reason} until {h.until:%Y-%m-%d}\tasked by {h.requested_by}"
            f" {h.requested_at:%Y-%m-%d %H:%M}"
        )
    if not waiting:
        typer.echo("no hold request waits for approval", err=True)
    elif len(waiting) == 500:
        typer.echo("(the oldest 500: approve or let some end to see the others)", err=True)
    return 0


@holds_app.command("approve")
@run_async
async def holds_approve(
    hold: Annotated[str, typer.Argument(help="the hold request's id (`renkei holds request`)")],
) -> int:
    """Approve a pending hold request, as the signed-in platform operator
    (RENKEI_OPERATOR_TOKEN: an operator of the hub's, never the requesting executor's)."""
    from renkei.app.actors import NotSignedIn
    from renkei.app.controls import NotAPlatformOperator, signed_in_platform_operator

    try:
        asked = uuid.UUID(hold)
    except ValueError:
        typer.echo(f"error: {hold!r} is not a hold request id", err=True)
        return 2
    async with database(get_settings()) as pool:
        try:
            operator = await signed_in_platform_operator(pool)
            done = await holds.approve(
                pool, asked, operator, hub=keys.load(get_settings()).signer()
            )
        except (NotSignedIn, NotAPlatformOperator, holds.HoldNotApproved) as err:
            typer.echo(f"error: {err}", err=True)
            return 2
    typer.echo(
        f"{done.id}\tapproved by {done.approved_by}\t{done.reason} until {done.until:%Y-%m-%d}"
        f"\t{done.bpf}/{done.executor}/{done.case_ref} about {done.subject or '(its whole case)'}"
    )
    return 0
