"""YAML from users, read in bounded time and memory.

A YAML document is small text that may stand for a huge value: an anchor repeated through
aliases nine times on each of nine levels (the "billion laughs") is a few hundred bytes and a
billion nodes once expanded, and a few thousand ``[`` nest deeper than Python's recursion limit.
Every YAML file a user hands renkei (a BPF, a conformance scenario set, a tariff file) is
therefore first walked event by event, before anything is built, and refused with its line if
it passes one of these limits:

- :data:`MAX_CHARS` characters in the file;
- :data:`MAX_DEPTH` levels of nested mappings and sequences;
- :data:`MAX_ALIASES` aliases (``*name``) in the document;
- :data:`MAX_NODES` nodes in the document with every alias expanded (what a loader would build);
- an alias inside the very node its anchor names (a recursive document) is refused too.

The walk keeps one counter per open collection and one number per anchor, so it takes time
linear in the text and memory bounded by the depth and the number of anchors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    ScalarEvent,
)

MAX_CHARS = 262_144
MAX_DEPTH = 64
MAX_ALIASES = 200
MAX_NODES = 100_000


class YamlLimitError(ValueError):
    """A document past one of the limits; ``line`` (1-based) is where it went past."""

    def __init__(self, message: str, line: int) -> None:
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}")


class YamlFileError(ValueError):
    """A user's YAML file that cannot be read; the message is ``file:line: what``."""


def read_text(path: Path) -> str:
    """The text of ``path``, read no further than the limit allows (UTF-8, at most four bytes
    a character); raises :class:`YamlLimitError` past it, ``OSError`` and
    ``UnicodeDecodeError`` as reading does."""
    with path.open("rb") as f:
        data = f.read(MAX_CHARS * 4 + 1)
    if len(data) > MAX_CHARS * 4:
        raise YamlLimitError(f"the file is longer than {MAX_CHARS} characters", 1)
    return data.decode("utf-8")


def check_limits(text: str) -> None:
    """Raise :class:`YamlLimitError` if ``text`` passes a limit; YAML syntax errors are left to
    the loader that reads it next (they stop the walk where they are)."""
    if len(text) > MAX_CHARS:
        raise YamlLimitError(f"the file is longer than {MAX_CHARS} characters", 1)
    open_nodes: list[list[Any]] = []  # [expanded size so far, anchor] of each open collection
    sizes: dict[str, int] = {}  # expanded size of each anchored node, once closed
    total = aliases = 0

    def add(size: int, line: int) -> None:
        nonlocal total
        total += size
        if total > MAX_NODES:
            raise YamlLimitError(
                f"the document expands to more than {MAX_NODES} nodes (aliases repeat what"
                " their anchor names)",
                line,
            )
        if open_nodes:
            open_nodes[-1][0] += size

    try:
        for event in YAML(typ="rt", pure=True).parse(text):
            line = (event.start_mark.line + 1) if event.start_mark else 1
            if isinstance(event, ScalarEvent):
                if event.anchor:
                    sizes[event.anchor] = 1
                add(1, line)
            elif isinstance(event, CollectionStartEvent):
                if len(open_nodes) >= MAX_DEPTH:
                    raise YamlLimitError(
                        f"mappings and sequences nest deeper than {MAX_DEPTH} levels", line
                    )
                add(1, line)
                open_nodes.append([1, event.anchor])
            elif isinstance(event, CollectionEndEvent):
                size, anchor = open_nodes.pop()
                if anchor:
                    sizes[anchor] = size
                if open_nodes:
                    open_nodes[-1][0] += size
            elif isinstance(event, AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise YamlLimitError(f"more than {MAX_ALIASES} aliases", line)
                if any(anchor == event.anchor for _, anchor in open_nodes):
                    raise YamlLimitError(
                        f"alias *{event.anchor} inside the node its anchor names", line
                    )
                add(sizes.get(event.anchor or "", 0), line)
    except YAMLError:
        return  # the loader reports the syntax error, located


def load(text: str, typ: str = "safe") -> Any:
    """``text`` read with ruamel's ``typ`` loader once it passed :func:`check_limits`."""
    check_limits(text)
    return YAML(typ=typ, pure=True).load(text)


def read_file(path: Path, typ: str = "safe") -> Any:
    """A user's YAML file, read within the limits; raises :class:`YamlFileError` (located) or
    ``OSError``."""
    try:
        return load(read_text(path), typ)
    except YamlLimitError as err:
        raise YamlFileError(f"{path}:{err.line}: refused: {err.message}") from None
    except UnicodeDecodeError:
        raise YamlFileError(f"{path}: not UTF-8 text") from None
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlFileError(f"{path}:{line}: not valid YAML: {err.problem}") from None
    except YAMLError as err:
        raise YamlFileError(f"{path}: not valid YAML: {err}") from None
