"""Reading BPF files: YAML with line numbers, pydantic validation, located errors.

Every problem is reported as ``file:line: path: message`` where ``path`` is the field inside the
document (``steps[2].query.info``), so an author can jump straight to it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from renkei.bpf.models import UNION_TAGS, BpfDefinition
from renkei.kernel.yaml_limits import YamlLimitError, check_limits, read_text


class Issue(BaseModel):
    """One located problem (or, with ``severity="warning"``, a note) about a BPF file."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int | None
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(document)'}: {self.message}"


class BpfFileError(Exception):
    """A BPF file that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class SourceMap:
    """Line numbers of every node of a YAML document, by path."""

    def __init__(self, root: Any) -> None:
        self.root = root

    def line(self, loc: tuple[str | int, ...]) -> int | None:
        node, best = self.root, 1
        for part in loc:
            try:
                if isinstance(node, CommentedMap) and part in node:
                    best = node.lc.key(part)[0] + 1
                    node = node[part]
                elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                    best = node.lc.item(part)[0] + 1
                    node = node[part]
                else:
                    break
            except (KeyError, IndexError, TypeError, AttributeError):
                break
        return best


def format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _strip_tags(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop the union tags pydantic puts after a list index (``steps.0.query.query.info``)."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and part in UNION_TAGS and i > 0 and isinstance(loc[i - 1], int):
            continue
        out.append(part)
    return tuple(out)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def content_hash(definition: BpfDefinition) -> str:
    """SHA-256 of the definition's canonical JSON: what a run pins and records."""
    return stored_hash(definition.model_dump(mode="json", by_alias=True))


def stored_hash(dumped: object) -> str:
    """:func:`content_hash` of a definition as it is stored (its JSON form, not the model):
    the hash a registered version's stored content must still have, whatever fields later
    versions of the model add."""
    canonical = json.dumps(dumped, sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class LoadedBpf(BaseModel):
    """A parsed definition with where it came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    definition: BpfDefinition
    source_name: str
    source_text: str
    content_hash: str
    source_map: Any = None

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        return self.source_map.line(loc) if self.source_map else None


def parse_text(text: str, name: str) -> LoadedBpf:
    """Parse and schema-check one BPF document. Raises :class:`BpfFileError`."""
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    try:
        check_limits(text)  # aliases, nesting, size: before anything is built
        root = yaml.load(text)
    except YamlLimitError as err:
        raise BpfFileError(
            [Issue(file=name, line=err.line, path="", message=f"refused: {err.message}")]
        ) from None
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        raise BpfFileError(
            [Issue(file=name, line=line, path="", message=f"not valid YAML: {err.problem}")]
        ) from None
    except ReaderError as err:  # a character YAML does not allow (control characters …)
        line = text.count("\n", 0, max(err.position, 0)) + 1
        raise BpfFileError(
            [
                Issue(
                    file=name,
                    line=line,
                    path="",
                    message=f"not valid YAML: character U+{err.character:04X} is not allowed",
                )
            ]
        ) from None
    except YAMLError as err:
        raise BpfFileError(
            [Issue(file=name, line=1, path="", message=f"not valid YAML: {err}")]
        ) from None
    if not isinstance(root, CommentedMap):
        raise BpfFileError([Issue(file=name, line=1, path="", message="a BPF is a YAML mapping")])
    smap = SourceMap(root)
    try:
        definition = BpfDefinition.model_validate(_plain(root))
    except ValidationError as err:
        issues = []
        for e in err.errors():
            loc = _strip_tags(tuple(e["loc"]))
            msg = e["msg"]
            if e["type"] == "extra_forbidden":
                msg = f"unknown key `{loc[-1]}`"
            issues.append(Issue(file=name, line=smap.line(loc), path=format_path(loc), message=msg))
        raise BpfFileError(issues) from None
    return LoadedBpf(
        definition=definition,
        source_name=name,
        source_text=text,
        content_hash=content_hash(definition),
        source_map=smap,
    )


def load_file(path: Path, display_name: str | None = None) -> LoadedBpf:
    """Read and schema-check one BPF file."""
    name = display_name or str(path)
    try:
        text = read_text(path)
    except YamlLimitError as err:
        raise BpfFileError(
            [Issue(file=name, line=err.line, path="", message=f"refused: {err.message}")]
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise BpfFileError([Issue(file=name, line=None, path="", message=str(err))]) from None
    return parse_text(text, name)


def definition_files(directory: Path) -> list[Path]:
    """The BPF files directly in ``directory`` (subfolders hold drafts and test fixtures)."""
    return sorted(p for p in directory.glob("*.yaml") if p.is_file())
