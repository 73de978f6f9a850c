"""What the HTTP API publishes at ``/api/openapi.json`` beyond its routes: who may call it (the
security schemes), what a refusal looks like (the error bodies and each status's meaning), and
the public start request.

- **Security schemes.** ``agencyToken``: an agency's API token (``renkei agencies token ORG``)
  as ``Authorization: Bearer rka_…``. ``portalCode``: a citizen's portal code as a bearer token
  (the SDK's :class:`renkei.citizen.PortalClient`). ``citizenSession``: the cookie set by
  signing in at ``/citizen``. ``operatorToken`` and ``operatorSession``: a codec operator's
  token, as a bearer token or the cookie set at ``/codec/login``. The dependencies below read
  them (with ``auto_error=False``: each route answers a missing or unknown credential itself,
  with a 401 and its reason).
- **Refusals.** Every 4xx and 5xx body is ``{"detail": "<reason>"}``; a 422 for a request that
  does not validate lists the issues instead (FastAPI's ``detail: [{loc, msg, type}, …]``).
- **The public start.** :class:`StartRequest` is :class:`~renkei.contracts.messages.StartFlow`
  without the fields only renkei sets (``resume``, ``parent``, ``caller_ticket``, ``attestation``,
  ``resume_signature``, ``signed_resume``, ``paths``): a request naming one of them is refused
  (422).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import Path
from fastapi.security import APIKeyCookie, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from renkei.app.citizen import RecordFilter
from renkei.bpf.inputs import SUBJECT_CODE
from renkei.contracts.messages import CASE_REF, DisclosureHold, StartFlow, check_case_ref

CITIZEN_COOKIE = "renkei_portal"
OPERATOR_COOKIE = "renkei_codec"

AGENCY_TOKEN = HTTPBearer(
    scheme_name="agencyToken",
    bearerFormat="rka_…",
    description="An agency's API token (`renkei agencies token ORG`, shown once): the agency"
    " acts on its own flows only.",
    auto_error=False,
)
PORTAL_CODE = HTTPBearer(
    scheme_name="portalCode",
    description="A citizen's portal code (`renkei subjects enroll --org portal`): the citizen's"
    " own records and flows.",
    auto_error=False,
)
CITIZEN_SESSION = APIKeyCookie(
    name=CITIZEN_COOKIE,
    scheme_name="citizenSession",
    description="The signed session cookie set by signing in at `/citizen` (two hours).",
    auto_error=False,
)
OPERATOR_TOKEN = HTTPBearer(
    scheme_name="operatorToken",
    bearerFormat="rko_…",
    description="A codec operator's token (`renkei operators add NAME`); every request is"
    " logged under the operator's name.",
    auto_error=False,
)
OPERATOR_SESSION = APIKeyCookie(
    name=OPERATOR_COOKIE,
    scheme_name="operatorSession",
    description="The cookie set by signing in at `/codec/login` (the Temporal Web UI sends it).",
    auto_error=False,
)


class Problem(BaseModel):
    """A refusal and its reason (which names no person)."""

    detail: str


class Issue(BaseModel):
    """One reason a request does not validate."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class Unprocessable(BaseModel):
    """A request that does not validate (its issues), or one refused for what it asks (the
    reason)."""

    detail: str | list[Issue]


MEANING = {
    400: "The body cannot be read (not JSON, or not the shape the operation reads).",
    401: "No credential, or one that is not known (or revoked).",
    403: "The caller may not do this (another agency's executor, a trigger only the platform"
    " uses, an unapproved hold, an answer as the citizen, a suspended BPF version, an org's"
    " operator on the platform's API).",
    404: "No such flow of the caller's (the same answer for a flow that does not exist and for"
    " another party's).",
    409: "The case reference is taken by a run started with other parameters.",
    422: "The request does not validate, or it is refused for what it asks (the reason says"
    " which).",
    503: "Temporal or the database cannot be reached, or did not answer in time; send the"
    " request again after the seconds `Retry-After` says.",
}

RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "seconds to wait before sending the request again",
        "schema": {"type": "integer"},
    }
}


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can answer these statuses."""
    return {
        code: {"model": Unprocessable if code == 422 else Problem, "description": MEANING[code]}
        | ({"headers": RETRY_AFTER_HEADER} if code == 503 else {})
        for code in codes
    }


# The examples the document shows (and a generated run of the API sends first): synthetic.
EXAMPLE_CODE = "MINATOCODEABCDEFGHIJ"
EXAMPLE_FLOW = "child-allowance-check/city-minato/2026-000042"

MAX_FLOW_ID = 400
FlowId = Annotated[
    str,
    Path(
        description="the run's workflow id: `<bpf>/<executor>/<case reference>`",
        examples=[EXAMPLE_FLOW],
        # no run's id is longer (a call's adds its caller's step); Temporal refuses past 1,000
        max_length=MAX_FLOW_ID,
    ),
]

# Set by renkei only: a flow continuing as new, a flow calling a child, the platform's paths.
INTERNAL = (
    "resume",
    "parent",
    "caller_ticket",
    "attestation",
    "resume_signature",
    "signed_resume",
    "paths",
)


class StartRequest(BaseModel):
    """Start a flow, as an agency asks it (``POST /api/flows``)."""

    model_config = ConfigDict(
        extra="forbid",
        title="StartRequest",
        json_schema_extra={
            "examples": [
                {
                    "bpf": "child-allowance-check",
                    "executor": "city-minato",
                    "subject": EXAMPLE_CODE,
                    "inputs": {"previous_municipality": "city-shibuya"},
                    "trigger": "counter",
                    "case_ref": "2026-000123",
                }
            ]
        },
    )

    bpf: str = Field(description="the BPF id")
    version: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="default: the operating version"
    )
    executor: str = Field(description="the org running the flow: the caller")
    subject: str = Field(
        pattern=SUBJECT_CODE.pattern, description="the subject's code at the executor"
    )
    inputs: dict[str, Any] = Field(default_factory=dict)
    trigger: Literal["counter", "portal", "life-event", "notification"] = Field(
        default="counter",
        description="an agency starts at its `counter` or `portal`; the others are the"
        " platform's (403)",
    )
    case_ref: Annotated[str, AfterValidator(check_case_ref)] = Field(
        pattern=CASE_REF,
        description="the caller's case reference; no personal data (an individual number or"
        " a subject code in it is refused)",
    )
    hold: DisclosureHold | None = None

    @model_validator(mode="before")
    @classmethod
    def _nothing_internal(cls, data: Any) -> Any:
        if isinstance(data, dict):
            named = [k for k in INTERNAL if data.get(k) is not None]
            if named:
                raise ValueError(f"{', '.join(named)}: set only by renkei")
            data = {k: v for k, v in data.items() if k not in INTERNAL}
        return data

    def to_start(self) -> StartFlow:
        """The start as renkei runs it."""
        return StartFlow.model_validate(self.model_dump())


class RecordQuery(RecordFilter):
    """The citizen's filter as query parameters: a parameter it does not know, or a date not
    written ``YYYY-MM-DD``, is refused (422) rather than ignored or guessed."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError("a date is written YYYY-MM-DD")
        return value
