"""Whitelist rows beyond Annex Table 2: a body's own use of its records under its own ordinance.

Article 9(2) of the My Number Act lets a local government use individual numbers for affairs its
own ordinance (条例) defines (独自利用事務). Each such ordinance is a source of its own, of one
body (``Source.body``): ``whitelist/data/ordinances/local-<org>.yaml`` holds the sample cities'
(a rows file, docs/whitelist.md). Its rows have the scope ``within-body`` and name their body, so
a row of city-minato's ordinance permits city-minato's use of its own records and nothing else —
never another city's, nor one city reading another's register.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from pathlib import Path

from whitelist.catalog import DATA_DIR, read_yaml
from whitelist.models import Catalog, Source, WhitelistRow

ORDINANCES_DIR = DATA_DIR / "ordinances"
# The shared rows file of the sample cities' own use, before each city's ordinance was a source
# of its own: a store that still holds its rows has them retired by the shipped load.
RETIRED_SOURCE = "renkei-local"


def rows_file_source(path: Path) -> Source:
    """The source a rows file forms, from its own header (``source``, ``title``, ``citation``,
    ``valid_from``), with the file's content hash."""
    data = read_yaml(path)
    return Source(
        id=data["source"],
        title=data["title"],
        citation=data["citation"],
        valid_from=data["valid_from"],
        content_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def check_ids(path: Path, n: int, row: dict[str, str], tables: dict[str, Container[str]]) -> None:
    """Refuse row ``n`` of ``path`` if one of its ids is unknown to its catalog table."""
    for key, table in tables.items():
        if row[key] not in table:
            raise ValueError(f"{path}: row {n}: unknown {key} {row[key]!r}")


def ordinance_files(directory: Path = ORDINANCES_DIR) -> list[Path]:
    """The shipped ordinances' rows files, one per body (the source id is the file's stem)."""
    return sorted(directory.glob("*.yaml"))


def ordinance(catalog: Catalog, path: Path) -> tuple[Source, list[WhitelistRow]]:
    """A body's ordinance read from its rows file: the source (``body`` from the file) and its
    rows. Raises :class:`~whitelist.sources.SourceFileError` (located) when it is not one."""
    from whitelist.sources import SourceFileError, build_rows, read_rows_file

    read = read_rows_file(path)
    m = read.meta
    if m.body is None or m.title is None or m.citation is None or m.valid_from is None:
        raise SourceFileError([f"{path}: an ordinance names its body, title, citation, valid_from"])
    source = Source(
        id=path.stem,
        title=m.title,
        citation=m.citation,
        valid_from=m.valid_from,
        valid_to=m.valid_to,
        body=m.body,
        content_hash=read.content_hash,
    )
    return source, build_rows(source, read.rows, catalog)


def ordinances(catalog: Catalog) -> list[tuple[Source, list[WhitelistRow]]]:
    """Every shipped body's ordinance with its rows."""
    return [ordinance(catalog, p) for p in ordinance_files()]


def load_local(catalog: Catalog) -> list[WhitelistRow]:
    """The rows of every shipped body's ordinance."""
    return [r for _, rows in ordinances(catalog) for r in rows]


def local_sources() -> list[Source]:
    """The shipped bodies' ordinances, as sources."""
    from whitelist.catalog import default_catalog

    return [s for s, _ in ordinances(default_catalog())]


def all_rows(catalog: Catalog) -> list[WhitelistRow]:
    """Every row renkei ships: Annex Table 2, the bodies' ordinances and the partner rows."""
    from whitelist.annex2 import load_annex2
    from whitelist.partners import load_partners

    return [*load_annex2(catalog), *load_local(catalog), *load_partners(catalog)]


def all_sources() -> list[Source]:
    """The sources renkei ships, for :func:`all_rows`."""
    from whitelist.annex2 import annex2_source
    from whitelist.partners import partners_source

    return [annex2_source(), *local_sources(), partners_source()]
