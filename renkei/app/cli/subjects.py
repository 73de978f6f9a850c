"""``renkei subjects``: enrol a person by individual number, and show sample residents' codes;
each org knows a subject only by its own code."""

from __future__ import annotations

from typing import Annotated

import typer

from renkei.app.cli.runtime import database, run_async
from renkei.kernel import keys
from renkei.kernel.settings import get_settings
from whitelist.catalog import default_catalog

subjects_app = typer.Typer(help="Subjects and their agency-specific codes.", no_args_is_help=True)


@subjects_app.command("enroll")
@run_async
async def subjects_enroll(
    org: Annotated[str, typer.Option(help="the enrolling org (or 'portal' for a citizen)")],
    number: Annotated[
        str,
        typer.Option(
            prompt="individual number",
            hide_input=True,
            envvar="RENKEI_INDIVIDUAL_NUMBER",
            help="the person's individual number (prompted for if not given; never stored)",
        ),
    ],
) -> int:
    """Enrol a person by individual number and print the org's own code for them."""
    from renkei.kernel.pseudonyms import (
        PORTAL,
        IndividualAltered,
        InvalidIndividualNumber,
        Pseudonyms,
    )

    if org != PORTAL and org not in default_catalog().orgs:
        typer.echo(f"error: unknown org {org!r}", err=True)
        return 2
    settings = get_settings()
    async with database(settings) as pool:
        try:
            code = await Pseudonyms(pool, keys.load(settings).hub_key).enroll_number(number, org)
        except InvalidIndividualNumber as err:
            typer.echo(f"error: {err}", err=True)
            return 2
        except IndividualAltered as err:
            typer.echo(f"error: {err}: nothing enrolled (see docs/trust.md)", err=True)
            return 1
    typer.echo(code)
    return 0


@subjects_app.command("sample")
def subjects_sample(
    org: Annotated[str, typer.Option(help="the org whose codes to show")],
    count: int = 5,
) -> None:
    """Show a few sample residents' codes at an org (synthetic data, for trying flows)."""
    from activities.agencies.synthetic import generate
    from renkei.kernel.pseudonyms import PORTAL, derive_code

    if org != PORTAL and org not in default_catalog().orgs:
        typer.echo(f"error: unknown org {org!r}", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    for h in generate(settings.sample_residents)[:count]:
        members = ", ".join(
            f"{m.relationship}={derive_code(keys.load(settings).hub_key, org, m.subject_id)}"
            for m in h.members
        )
        typer.echo(f"{h.id} ({h.municipality}, {h.kind}): {members}")
