"""Partner rows: the legal basis of ``act`` steps (a partner org carrying out an action).

``whitelist/data/partners/rows.yaml`` holds them (source ``renkei-partners``). A row names an
action of the catalog where an Annex Table 2 row names an info item, and cites its own basis.
A row of scope ``consent`` permits an act only on the citizen's own attested consent (the hub
checks it, see ``activities.hub``); one of scope ``between-bodies`` is a law that provides for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container
from pathlib import Path

from whitelist.catalog import DATA_DIR, read_yaml
from whitelist.local import check_ids, rows_file_source
from whitelist.models import Catalog, Source, WhitelistRow

PARTNERS_FILE = DATA_DIR / "partners" / "rows.yaml"
SOURCE = "renkei-partners"


def partners_source(path: Path = PARTNERS_FILE) -> Source:
    """The source the partner rows form: each row cites its own basis."""
    return rows_file_source(path)


def load_partners(catalog: Catalog, path: Path = PARTNERS_FILE) -> list[WhitelistRow]:
    data = read_yaml(path)
    valid_from: dt.date = data["valid_from"]
    rows = []
    tables: dict[str, Container[str]] = {
        "requester_role": catalog.roles,
        "provider_role": catalog.roles,
        "task": catalog.tasks,
        "action": catalog.actions,
    }
    for n, r in enumerate(data["rows"], start=1):
        check_ids(path, n, r, tables)
        if r["scope"] not in ("consent", "between-bodies"):
            raise ValueError(f"{path}: row {n}: scope is consent or between-bodies")
        rows.append(
            WhitelistRow(
                id=f"{data['source']}/{n}",
                source=data["source"],
                item=r["citation"],
                requester_role=r["requester_role"],
                task=r["task"],
                provider_role=r["provider_role"],
                info=r["action"],
                legal_text=r["citation"],
                valid_from=r.get("valid_from", valid_from),
                scope=r["scope"],
            )
        )
    return rows
