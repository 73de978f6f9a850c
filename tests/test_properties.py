"""Property-based tests (hypothesis): bad input never crashes, never allows, never starts a flow.

- Random and mutated YAML fed to the BPF loader and the static check: a BPF or located errors,
  nothing else.
- Random claims to the whitelist decision: allowed exactly when a row in force matches.
- Malformed starts sent to the HTTP API and the SDK: a 4xx (or a clear exception) with a reason,
  never a 500, and no run exists afterwards.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.client import Client

from renkei.app.client import RenkeiClient
from renkei.bpf.inputs import SUBJECT_CODE
from renkei.bpf.loader import BpfFileError, LoadedBpf, parse_text
from renkei.bpf.validation import validate
from renkei.contracts.messages import CASE_REF, StartFlow
from renkei.contracts.names import control_queue
from renkei.kernel.settings import Settings
from tests.paths import SAMPLES_DIR
from whitelist.annex2 import load_annex2
from whitelist.catalog import default_catalog
from whitelist.decide import JST, WhitelistIndex, decide_linkage
from whitelist.local import load_local

from .helpers import child_rearing, pick

T = TypeVar("T")
CATALOG = default_catalog()
INDEX = WhitelistIndex([*load_annex2(CATALOG), *load_local(CATALOG)])
SAMPLES = sorted((SAMPLES_DIR).glob("*.yaml"))
LOCAL_BPFS = {parse_text(p.read_text(encoding="utf-8"), p.name).definition.bpf for p in SAMPLES}
TEXTS = {p.name: p.read_text(encoding="utf-8") for p in SAMPLES}

# YAML counts a lone carriage return (and NEL, LS, PS) as a line break too, as editors do.
YAML_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")

FAST = hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the BPF loader ----------------------------------------------------------------------------


def _load(text: str) -> LoadedBpf | None:
    """Parse and statically check; a BpfFileError must locate every issue in the text."""
    lines = len(YAML_LINE_BREAK.split(text))
    try:
        loaded = parse_text(text, "fuzz.yaml")
    except BpfFileError as err:
        assert err.issues
        for issue in err.issues:
            assert issue.file == "fuzz.yaml"
            assert issue.line is not None and 1 <= issue.line <= lines, issue
            assert issue.message
        return None
    for issue in validate(loaded, CATALOG, INDEX):
        assert issue.message and issue.file == "fuzz.yaml"
        assert issue.line is None or 1 <= issue.line <= lines, issue
    return loaded


@FAST
@given(st.text(max_size=400))
def test_random_text_is_a_bpf_or_located_errors(text: str) -> None:
    _load(text)


YAMLISH = st.sampled_from(
    [":", "- ", "  ", "{", "}", "[", "]", "'", '"', "#", "&a", "*a", "!!int", "|", ">", "\t",
     "${", "}", "null", "~", "0x1", "1e9", "-1", "true", "steps", "query", "when", "${ inputs.x }",
     "\u3000", "\x00", "\ufeff", "　", "：", "\r"]
)  # fmt: skip


@st.composite
def mutated_sample(draw: st.DrawFn) -> str:
    lines = TEXTS[draw(st.sampled_from(sorted(TEXTS)))].splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "swap", "indent", "dedent", "insert", "cut"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:]
        elif op == "insert":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(YAMLISH | st.text(max_size=8)) + lines[i][at:]
        else:
            lines = lines[: i + 1]
    return "\n".join(lines) + "\n"


@FAST
@given(mutated_sample())
def test_mutated_samples_are_a_bpf_or_located_errors(text: str) -> None:
    _load(text)


def test_the_samples_themselves_load() -> None:
    for text in TEXTS.values():
        assert _load(text) is not None


# -- the whitelist decision --------------------------------------------------------------------

ORGS = sorted(CATALOG.orgs)
TASKS = sorted({r.task for r in INDEX.rows()})
INFOS = sorted({r.info for r in INDEX.rows()})
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)


@hsettings(max_examples=2000, deadline=None)
@given(
    requester=st.sampled_from(ORGS) | names,
    provider=st.sampled_from(ORGS) | names,
    task=st.sampled_from(TASKS) | names,
    info=st.sampled_from(INFOS) | names,
    at=st.datetimes(dt.datetime(1990, 1, 1), dt.datetime(2060, 1, 1), timezones=st.just(dt.UTC)),
)
def test_allowed_exactly_when_a_row_in_force_matches(
    requester: str, provider: str, task: str, info: str, at: dt.datetime
) -> None:
    decision = decide_linkage(CATALOG, INDEX, requester, provider, task, info, at)
    day = at.astimezone(JST).date()
    matching = [
        r
        for r in INDEX.rows()
        if requester in CATALOG.orgs
        and provider in CATALOG.orgs
        and r.requester_role in CATALOG.org_roles(requester)
        and r.provider_role in CATALOG.org_roles(provider)
        and (r.task, r.info) == (task, info)
        and r.valid_at(day)
    ]
    assert decision.allowed == bool(matching), decision.reason
    if decision.allowed:
        assert decision.row in matching
    else:
        assert decision.row is None and decision.reason


# -- starts through the HTTP API and the SDK ---------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
NOT_TEXT = st.none() | st.booleans() | st.integers() | st.lists(st.integers(), max_size=2)
CODE_LIKE = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=19, max_size=21)


@st.composite
def broken_start(draw: st.DrawFn, valid: dict[str, Any]) -> Any:
    """A start request that one to three known faults make invalid."""
    body = json.loads(json.dumps(valid))
    faults = draw(
        st.lists(
            st.sampled_from(
                [
                    "missing",
                    "wrong-type",
                    "bad-subject",
                    "bad-case-ref",
                    "unknown-bpf",
                    "bad-input",
                    "unknown-input",
                    "unknown-executor",
                    "bad-trigger",
                    "not-an-object",
                ]
            ),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    for fault in faults:
        if fault == "missing":
            del body[draw(st.sampled_from(["bpf", "executor", "subject", "case_ref"]))]
        elif fault == "wrong-type":
            body[draw(st.sampled_from(["bpf", "executor", "subject", "case_ref"]))] = draw(NOT_TEXT)
        elif fault == "bad-subject":
            # Anything but an agency-specific code: near misses of one, and any text.
            body["subject"] = draw(
                (CODE_LIKE | CODE_LIKE.map(str.lower) | st.text(max_size=30)).filter(
                    lambda s: not SUBJECT_CODE.match(s)
                )
            )
        elif fault == "bad-case-ref":
            body["case_ref"] = draw(
                st.text(max_size=80).filter(lambda s: not re.fullmatch(CASE_REF, s))
            )
        elif fault == "unknown-bpf":
            body["bpf"] = "no-such-" + draw(names)
        elif fault == "bad-input":
            body["inputs"] = {"municipality": draw(NOT_TEXT | st.just("no-such-org"))}
        elif fault == "unknown-input":
            body["inputs"] = {**body.get("inputs", {}), "x" + draw(names): draw(JSON)}
        elif fault == "unknown-executor":
            body["executor"] = "no-such-" + draw(names)
        elif fault == "bad-trigger":
            body["trigger"] = draw(st.sampled_from(["life-event", "notification"]) | names)
        else:
            return draw(JSON.filter(lambda v: not isinstance(v, dict)))
    return body


def _on(loop: asyncio.AbstractEventLoop) -> Callable[[Awaitable[T]], T]:
    """Run a coroutine on the test's event loop from hypothesis's (worker) thread."""

    def run(coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)  # type: ignore[arg-type]

    return run


async def _runs(client: Client, settings_: Settings) -> int:
    queues = ", ".join(
        f"'{control_queue(settings_.task_queue_prefix, org)}'" for org in default_catalog().orgs
    )
    count = await client.count_workflows(f"TaskQueue IN ({queues})")
    return count.count


async def test_malformed_starts_are_refused_with_a_reason_and_start_nothing(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    from renkei.app.web import create_app
    from renkei.app.web.api import issue_token

    h = pick(settings, lambda h: h.municipality == "city-minato")
    valid = child_rearing(settings, h.members[0]).model_dump(mode="json", exclude={"resume"})
    token = await issue_token(pool, "pref-tokyo")
    app = create_app(settings, pool, client)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    sdk = RenkeiClient(client, settings)
    run = _on(asyncio.get_running_loop())
    seen: dict[int, int] = {}

    async def post(body: Any) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://renkei") as http:
            return await http.post(
                "/api/flows", json=body, headers={"Authorization": f"Bearer {token}"}
            )

    @hsettings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(broken_start(valid))
    def check(body: Any) -> None:
        response = run(post(body))
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
        assert response.json().get("detail"), response.text
        try:
            flow = StartFlow.model_validate(body)
        except ValidationError:
            return
        if flow.bpf in LOCAL_BPFS:  # the SDK checks against the definitions it has
            with pytest.raises(ValueError):  # … and refuses before anything reaches Temporal
                run(sdk.start(flow))

    await asyncio.to_thread(check)
    assert await _runs(client, settings) == 0
    assert set(seen) <= {403, 422}, seen
    # The valid request itself would start (the faults, not the harness, made them fail).
    assert (await post(valid)).status_code == 201
    async with asyncio.timeout(30):  # visibility is eventually consistent: polled until it is
        while (runs := await _runs(client, settings)) == 0:  # noqa: ASYNC110 (a query)
            await asyncio.sleep(0.1)
    assert runs == 1
