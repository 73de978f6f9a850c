"""Building structured whitelist rows from Annex Table 2 (番号法 別表第二, 2015 text).

The statute's rows name roles, tasks and information categories in legal Japanese. The mapping
file (``data/annex2-2015/mapping.yaml``, documented in docs/whitelist.md) assigns every distinct
text its structured ids; a text that names several roles or categories maps to several ids, and
the row becomes one entry per combination, all keeping the item number and the original text as
their legal reference.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
from pathlib import Path

from whitelist.catalog import DATA_DIR, read_yaml
from whitelist.models import Catalog, Source, WhitelistRow

ANNEX2_DIR = DATA_DIR / "annex2-2015"
SOURCE = "annex2-2015"

_DIGITS = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


def kanji_to_int(text: str) -> int:
    """Convert a kanji numeral below 1000 (e.g. 百二十, 五十七) to an int."""
    total, current = 0, 0
    for ch in text:
        if ch in _DIGITS:
            current = _DIGITS[ch]
        elif ch == "十":
            total += (current or 1) * 10
            current = 0
        elif ch == "百":
            total += (current or 1) * 100
            current = 0
        else:
            raise ValueError(f"not a kanji numeral: {text!r}")
    return total + current


def item_number(item: str) -> str:
    """The item's number in arabic digits: 五十七 → 57, 五十六の二 → 56-2."""
    return "-".join(str(kanji_to_int(part)) for part in item.split("の"))


def annex2_source(directory: Path = ANNEX2_DIR) -> Source:
    """The source the 2015 table forms: validity, citation form and stand-in date from the
    mapping, content hash over the table and the mapping."""
    mapping = read_yaml(directory / "mapping.yaml")
    digest = hashlib.sha256()
    for name in (mapping["source"], "mapping.yaml"):
        digest.update((directory / name).read_bytes())
    return Source(
        id=SOURCE,
        title=mapping["title"],
        citation=f"{mapping['citation']} {{item}}項",
        valid_from=mapping["valid_from"],
        valid_to=mapping["valid_to"],
        stand_in_from=mapping.get("stand_in_from"),
        stand_in_note=mapping.get("stand_in_note"),
        content_hash=digest.hexdigest(),
    )


def load_annex2(catalog: Catalog, directory: Path = ANNEX2_DIR) -> list[WhitelistRow]:
    """Build the structured rows from the CSV and the mapping; fail on any unmapped text."""
    mapping = read_yaml(directory / "mapping.yaml")
    suffix: str = mapping["suffix"]
    parties = {p["text"]: p["roles"] for p in mapping["parties"]}
    infos = {i["text"]: i["items"] for i in mapping["info"]}
    tasks = {t["text"]: t["task"] for t in mapping["tasks"]}
    valid_from: dt.date = mapping["valid_from"]
    valid_to: dt.date | None = mapping["valid_to"]
    citation: str = mapping["citation"]

    rows: list[WhitelistRow] = []
    problems: list[str] = []
    with (directory / mapping["source"]).open(encoding="utf-8") as f:
        for line, rec in enumerate(csv.DictReader(f), start=2):
            requesters = parties.get(rec["requester"])
            providers = parties.get(rec["provider"])
            task = tasks.get(rec["task"].removesuffix(suffix))
            info = infos.get(rec["info"].removesuffix(suffix))
            for what, found in (
                ("requester", requesters),
                ("provider", providers),
                ("task", task),
                ("info", info),
            ):
                if found is None:
                    problems.append(f"line {line}: {what} text has no mapping")
            if requesters is None or providers is None or task is None or info is None:
                continue
            number = item_number(rec["item"])
            legal = (
                f"{citation} {rec['item']}項: {rec['requester']} | {rec['task']} | "
                f"{rec['provider']} | {rec['info']}"
            )
            for r, p, i in itertools.product(requesters, providers, info):
                rows.append(
                    WhitelistRow(
                        id=f"{SOURCE}/{number}/{r}/{p}/{i}",
                        source=SOURCE,
                        item=f"{citation} {rec['item']}項",
                        requester_role=r,
                        task=task,
                        provider_role=p,
                        info=i,
                        legal_text=legal,
                        valid_from=valid_from,
                        valid_to=valid_to,
                    )
                )
    for row in rows:
        for kind, ident, known in (
            ("role", row.requester_role, catalog.roles),
            ("role", row.provider_role, catalog.roles),
            ("task", row.task, catalog.tasks),
            ("info item", row.info, catalog.info_items),
        ):
            if ident not in known:
                problems.append(f"{row.id}: unknown {kind} {ident!r}")
    if problems:
        raise ValueError("annex2 mapping is incomplete:\n  " + "\n  ".join(sorted(set(problems))))
    # Rows of the statute listing the same provider twice collapse to one entry.
    return list({r.id: r for r in rows}.values())
