"""Legal sources as data: the rows file an operator loads, and the diff a load makes.

A source (:class:`~whitelist.models.Source`) is a table or an ordinance in force for a period;
its rows are loaded from a file of structured rows, CSV or YAML (the columns are documented in
docs/whitelist.md, "Loading a source"), or from the official law XML through a mapping
(:mod:`whitelist.lawxml`). A file that cannot be read whole is refused with every problem
located (file and line), and nothing of it is loaded.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from renkei.kernel import yaml_limits
from whitelist.models import ID_PATTERN, Catalog, Scope, Source, WhitelistRow

# The largest rows file read (CSV or XML): the ordinance's whole table is far below it.
MAX_FILE_BYTES = 8 * 1024 * 1024
# How many problems a refusal lists (the count of the rest is given).
MAX_PROBLEMS = 20

REQUIRED_COLUMNS = ("item", "requester_role", "task", "provider_role", "info")
OPTIONAL_COLUMNS = ("sub_task", "sub_info", "scope", "legal_text")
# What a YAML file may say about its source (the command line's options override it).
META_KEYS = (
    "title",
    "citation",
    "valid_from",
    "valid_to",
    "supersedes",
    "stand_in_from",
    "stand_in_note",
    "body",
)


class SourceFileError(ValueError):
    """A rows file refused: every problem, each located (``file:line: what``)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_PROBLEMS]
        more = len(self.problems) - len(shown)
        super().__init__("\n".join(shown) + (f"\n… and {more} more problems" if more > 0 else ""))


class RowSpec(BaseModel):
    """One row of a rows file, in structured ids; ``where`` locates it (``file:line``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item: str = Field(min_length=1, max_length=200)
    requester_role: str = Field(pattern=ID_PATTERN)
    task: str = Field(pattern=ID_PATTERN)
    provider_role: str = Field(pattern=ID_PATTERN)
    info: str = Field(pattern=ID_PATTERN)
    sub_task: str | None = Field(default=None, pattern=ID_PATTERN)
    sub_info: str | None = Field(default=None, pattern=ID_PATTERN)
    scope: Scope | None = Field(
        default=None,
        description="none: between-bodies, or within-body for a row of a body's own ordinance",
    )
    legal_text: str | None = Field(default=None, max_length=4000)
    where: str = ""


class SourceMeta(BaseModel):
    """What a file says about its source; every field may be given on the command line too."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str | None = None
    citation: str | None = None
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None
    supersedes: str | None = None
    stand_in_from: dt.date | None = None
    stand_in_note: str | None = None
    body: str | None = Field(default=None, pattern=ID_PATTERN)


class RowsFile(BaseModel):
    """A rows file read: its source's metadata, its rows, the hash of its bytes; ``where``
    locates each metadata key the file gives (``file:line``)."""

    meta: SourceMeta
    rows: list[RowSpec]
    content_hash: str
    name: str
    where: dict[str, str] = Field(default_factory=dict)


def read_bytes(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The file's bytes, refused (located) past ``limit`` or when it cannot be read."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise SourceFileError([f"{path}: cannot be read ({err.strerror or err})"]) from None
    if len(data) > limit:
        raise SourceFileError([f"{path}: longer than {limit} bytes"])
    return data


def _spec(raw: dict[str, Any], where: str, problems: list[str]) -> RowSpec | None:
    values = {k: (v if v not in ("", None) else None) for k, v in raw.items()}
    values = {k: v for k, v in values.items() if v is not None}
    try:
        return RowSpec(**values, where=where)
    except ValidationError as err:
        for e in err.errors():
            field = ".".join(str(x) for x in e["loc"]) or "row"
            problems.append(f"{where}: {field}: {e['msg']}")
        return None


def _read_csv(path: Path, text: str, problems: list[str]) -> list[RowSpec]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as err:
        problems.append(f"{path}:1: not valid CSV: {err}")
        return []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown:
        problems.append(
            f"{path}:1: header: "
            + "; ".join(
                ([f"missing columns {', '.join(missing)}"] if missing else [])
                + ([f"unknown columns {', '.join(unknown)}"] if unknown else [])
            )
            + f" (columns: {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)})"
        )
        return []
    specs: list[RowSpec] = []
    try:
        for rec in reader:
            where = f"{path}:{reader.line_num}"
            if None in rec or any(v is None for v in rec.values()):
                problems.append(f"{where}: {len(header)} columns expected")
                continue
            found = _spec(dict(rec), where, problems)
            if found is not None:
                specs.append(found)
    except csv.Error as err:
        problems.append(f"{path}:{reader.line_num}: not valid CSV: {err}")
    if not specs and not problems:
        problems.append(f"{path}: no rows")
    return specs


def _line(node: Any) -> int | None:
    lc = getattr(node, "lc", None)
    return lc.line + 1 if lc is not None else None


def _read_yaml(
    path: Path, text: str, problems: list[str], located: dict[str, str]
) -> tuple[SourceMeta, list[RowSpec]]:
    try:
        yaml_limits.check_limits(text)
        doc = yaml_limits.load(text, typ="rt")
    except yaml_limits.YamlLimitError as err:
        problems.append(f"{path}:{err.line}: refused: {err.message}")
        return SourceMeta(), []
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        problems.append(f"{path}:{line}: not valid YAML: {err.problem}")
        return SourceMeta(), []
    except YAMLError as err:
        problems.append(f"{path}: not valid YAML: {err}")
        return SourceMeta(), []
    if not isinstance(doc, CommentedMap) or not isinstance(doc.get("rows"), CommentedSeq):
        problems.append(f"{path}:1: a mapping with `rows:` (a list of rows) expected")
        return SourceMeta(), []
    unknown = [k for k in doc if k not in (*META_KEYS, "rows")]
    if unknown:
        problems.append(f"{path}:{_line(doc) or 1}: unknown keys {', '.join(map(str, unknown))}")
    located.update({str(k): f"{path}:{doc.lc.key(k)[0] + 1}" for k in META_KEYS if k in doc})
    meta = SourceMeta()
    try:
        meta = SourceMeta(**{k: doc[k] for k in META_KEYS if k in doc})
    except ValidationError as err:
        for e in err.errors():
            key = str(e["loc"][0]) if e["loc"] else "?"
            line = doc.lc.key(key)[0] + 1 if key in doc else 1
            problems.append(f"{path}:{line}: {key}: {e['msg']}")
    specs: list[RowSpec] = []
    rows = doc["rows"]
    for n, raw in enumerate(rows):
        line = rows.lc.item(n)[0] + 1
        where = f"{path}:{line}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: a row is a mapping of {', '.join(REQUIRED_COLUMNS)}")
            continue
        found = _spec(
            {str(k): (str(v) if v is not None else None) for k, v in raw.items()}, where, problems
        )
        if found is not None:
            specs.append(found)
    if not specs and not problems:
        problems.append(f"{path}: no rows")
    return meta, specs


def read_rows_file(path: Path) -> RowsFile:
    """A CSV or YAML rows file, read whole or refused with every problem located."""
    data = read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SourceFileError([f"{path}:{line}: not UTF-8 text"]) from None
    problems: list[str] = []
    where: dict[str, str] = {}
    suffix = path.suffix.lower()
    meta = SourceMeta()
    if suffix == ".csv":
        specs = _read_csv(path, text, problems)
    elif suffix in (".yaml", ".yml"):
        meta, specs = _read_yaml(path, text, problems, where)
    else:
        raise SourceFileError([f"{path}: a rows file is .csv, .yaml or .yml (law XML: .xml)"])
    if problems:
        raise SourceFileError(problems)
    return RowsFile(
        meta=meta,
        rows=specs,
        content_hash=hashlib.sha256(data).hexdigest(),
        name=path.name,
        where=where,
    )


def build_rows(source: Source, specs: Iterable[RowSpec], catalog: Catalog) -> list[WhitelistRow]:
    """The rows of ``source`` from ``specs``; refused (located) if a row names an id the
    catalog does not know or repeats another. A row of a body's own ordinance (``source.body``)
    is of that body's use of its own records (``within-body``) and nothing else."""
    problems: list[str] = []
    rows: dict[str, WhitelistRow] = {}
    for spec in specs:
        scope: Scope = spec.scope or ("within-body" if source.body else "between-bodies")
        if source.body is not None and scope != "within-body":
            problems.append(
                f"{spec.where}: scope: {scope!r}, but a row of {source.body}'s own ordinance"
                " permits only its use of its own records (within-body, 番号法第9条第2項)"
            )
        for kind, ident, known in (
            ("requester_role", spec.requester_role, catalog.roles),
            ("task", spec.task, catalog.tasks),
            ("provider_role", spec.provider_role, catalog.roles),
            ("info", spec.info, catalog.info_items),
        ):
            if ident not in known:
                problems.append(f"{spec.where}: {kind}: unknown id {ident!r}")
        if spec.sub_info is not None:
            sub = catalog.info_items.get(spec.sub_info)
            if sub is None or sub.parent != spec.info:
                problems.append(
                    f"{spec.where}: sub_info: {spec.sub_info!r} is not an ordinance-level item"
                    f" of {spec.info!r} (an info item with `parent: {spec.info}`)"
                )
        rid = "/".join(
            (
                source.id,
                spec.item,
                spec.requester_role,
                spec.task,
                spec.provider_role,
                spec.info,
                spec.sub_task or "-",
                spec.sub_info or "-",
            )
        )
        if rid in rows:
            problems.append(f"{spec.where}: repeats an earlier row of item {spec.item}")
            continue
        cited = source.cite(spec.item)
        rows[rid] = WhitelistRow(
            id=rid,
            source=source.id,
            item=cited,
            requester_role=spec.requester_role,
            task=spec.task,
            provider_role=spec.provider_role,
            info=spec.info,
            sub_task=spec.sub_task,
            sub_info=spec.sub_info,
            legal_text=spec.legal_text or cited,
            valid_from=source.valid_from,
            valid_to=source.valid_to,
            scope=scope,
            body=source.body,
        )
    if problems:
        raise SourceFileError(problems)
    return list(rows.values())


# What a row permits, whatever source it comes from.
Key = tuple[str, str, str, str, str, str]


def row_key(r: WhitelistRow) -> Key:
    return (r.requester_role, r.task, r.provider_role, r.info, r.sub_task or "", r.sub_info or "")


class RowChange(BaseModel):
    """A permission both sides hold, with different terms."""

    before: WhitelistRow
    after: WhitelistRow


class RowDiff(BaseModel):
    """What a load changes against the rows it replaces (``against``: the source compared)."""

    against: str | None
    added: list[WhitelistRow] = Field(default_factory=list)
    removed: list[WhitelistRow] = Field(default_factory=list)
    changed: list[RowChange] = Field(default_factory=list)
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def purposes(self) -> set[tuple[str, str, str]]:
        """(requester role, task, info) of every row added, removed or changed."""
        rows = [*self.added, *self.removed, *(c.after for c in self.changed)]
        return {(r.requester_role, r.task, r.info) for r in rows}

    def lines(self, limit: int = 30) -> list[str]:
        """The diff as text lines: ``+`` added, ``-`` removed, ``~`` changed."""

        def show(r: WhitelistRow) -> str:
            sub = "".join(
                f" [{k} {v}]" for k, v in (("sub_task", r.sub_task), ("sub_info", r.sub_info)) if v
            )
            return (
                f"{r.item}: {r.requester_role} → {r.provider_role} | {r.task} | {r.info}{sub}"
                + (
                    f" (within {r.body} only)"
                    if r.body
                    else " (within one body)"
                    if r.scope == "within-body"
                    else ""
                )
            )

        out = [f"+ {show(r)}" for r in self.added]
        out += [f"- {show(r)}" for r in self.removed]
        out += [
            f"~ {show(c.after)} (was {c.before.item}"
            + (f", {c.before.scope}" if c.before.scope != c.after.scope else "")
            + ")"
            for c in self.changed
        ]
        if len(out) > limit:
            out = [*out[:limit], f"… and {len(out) - limit} more"]
        return out


def diff_rows(
    old: Sequence[WhitelistRow], new: Sequence[WhitelistRow], against: str | None
) -> RowDiff:
    """Rows added, removed and changed from ``old`` to ``new``. A permission is the same when
    its roles, task and info (both levels) are; it changed when its scope did, or — within one
    source — its item or wording did (a new source cites its rows in its own form, which is no
    change of what is permitted)."""
    same_source = bool(old) and bool(new) and old[0].source == new[0].source

    def terms(r: WhitelistRow) -> tuple[str, ...]:
        return (r.scope, r.body or "", r.item, r.legal_text) if same_source else (r.scope,)

    before: dict[Key, WhitelistRow] = {}
    for r in sorted(old, key=lambda r: r.id):
        before.setdefault(row_key(r), r)
    after: dict[Key, WhitelistRow] = {}
    for r in sorted(new, key=lambda r: r.id):
        after.setdefault(row_key(r), r)
    diff = RowDiff(against=against)
    for key, r in after.items():
        was = before.get(key)
        if was is None:
            diff.added.append(r)
        elif terms(was) != terms(r):
            diff.changed.append(RowChange(before=was, after=r))
        else:
            diff.unchanged += 1
    diff.removed = [r for key, r in before.items() if key not in after]
    return diff
