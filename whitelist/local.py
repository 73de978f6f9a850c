"""Whitelist rows beyond Annex Table 2: a body's own use of its records under an ordinance.

``whitelist/data/local/rows.yaml`` holds them (source ``renkei-local``); they cite their own
legal basis and have the scope ``within-body``: a municipality's ordinance covers its own use of
its own register, so such a row permits a linkage only when requester and provider are the same
org, never one city reading another's register.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Container
from pathlib import Path

from whitelist.catalog import DATA_DIR, read_yaml
from whitelist.models import Catalog, Source, WhitelistRow

LOCAL_FILE = DATA_DIR / "local" / "rows.yaml"
SOURCE = "renkei-local"


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


def local_source(path: Path = LOCAL_FILE) -> Source:
    """The source the local rows form (one citation for all, no item numbers)."""
    return rows_file_source(path)


def load_local(catalog: Catalog, path: Path = LOCAL_FILE) -> list[WhitelistRow]:
    data = read_yaml(path)
    valid_from: dt.date = data["valid_from"]
    rows = []
    tables: dict[str, Container[str]] = {
        "requester_role": catalog.roles,
        "provider_role": catalog.roles,
        "task": catalog.tasks,
        "info": catalog.info_items,
    }
    for n, r in enumerate(data["rows"], start=1):
        check_ids(path, n, r, tables)
        rows.append(
            WhitelistRow(
                id=f"{data['source']}/{n}",
                source=data["source"],
                item=data["citation"],
                requester_role=r["requester_role"],
                task=r["task"],
                provider_role=r["provider_role"],
                info=r["info"],
                legal_text=f"{data['citation']}: {r['basis']}"
                if r.get("basis")
                else data["citation"],
                valid_from=valid_from,
                scope=data["scope"],
            )
        )
    return rows


def all_rows(catalog: Catalog) -> list[WhitelistRow]:
    """Every row renkei ships: Annex Table 2, the local rows and the partner rows."""
    from whitelist.annex2 import load_annex2
    from whitelist.partners import load_partners

    return [*load_annex2(catalog), *load_local(catalog), *load_partners(catalog)]


def all_sources() -> list[Source]:
    """The sources renkei ships, for :func:`all_rows`."""
    from whitelist.annex2 import annex2_source
    from whitelist.partners import partners_source

    return [annex2_source(), local_source(), partners_source()]
