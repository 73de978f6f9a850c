"""The ``renkei`` command: the root of the command tree, and its groups, one module each.

``stack`` runs renkei (whole, or as separate processes), ``flows`` starts and checks flows,
``whitelist``, ``bpf``, ``subjects``, ``records``, ``access`` (operators, keys, agencies),
``controls`` (the PIA registry, suspensions), ``schedules``, ``billing`` and ``outbox`` hold their groups; ``runtime`` what they share, among it
``run_async``, the decorator that makes an ``async def`` a command."""

from __future__ import annotations

import typer
from rich.markup import escape

from renkei.app.cli import (
    access,
    billing,
    bpf,
    controls,
    flows,
    orgs,
    outbox,
    records,
    schedules,
    stack,
    subjects,
)
from renkei.app.cli import whitelist as whitelist_commands
from renkei.kernel.settings import variables


def settings_help() -> str:
    """Every ``RENKEI_*`` variable, a line each: the help's epilog of ``renkei up``."""
    return "Settings, from the environment (the README's table lists them too):\n\n" + "\n".join(
        escape(f"{v.name}: {v.meaning} (default: {v.default})") for v in variables()
    )


app = typer.Typer(
    help="renkei: whitelist-gated information linkage on Temporal. Settings come from RENKEI_*"
    " environment variables; `renkei up --help` lists them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

app.command(epilog=settings_help())(stack.up)

# Commands directly under ``renkei``, in the order ``renkei --help`` lists them.
for command in (
    stack.demo,
    flows.conformance,
    flows.contract,
    flows.start,
    flows.status,
    flows.runs,
    flows.notify,
    stack.init,
    stack.serve,
    stack.gateway,
    controls.suspensions,
):
    app.command()(command)

app.add_typer(whitelist_commands.whitelist_app, name="whitelist")
app.add_typer(bpf.bpf_app, name="bpf")
app.add_typer(orgs.orgs_app, name="orgs")
app.add_typer(subjects.subjects_app, name="subjects")
app.add_typer(records.records_app, name="records")
app.add_typer(access.operators_app, name="operators")
app.add_typer(access.keys_app, name="keys")
app.add_typer(access.holds_app, name="holds")
app.add_typer(access.agencies_app, name="agencies")
app.add_typer(controls.pia_app, name="pia")
app.add_typer(controls.suspend_app, name="suspend")
app.add_typer(controls.lift_app, name="lift")
app.add_typer(schedules.schedules_app, name="schedules")
app.add_typer(billing.billing_app, name="billing")
app.add_typer(billing.usage_app, name="usage")
app.add_typer(outbox.outbox_app, name="outbox")
app.add_typer(stack.worker_app, name="worker")


def main() -> None:  # pragma: no cover
    app()
