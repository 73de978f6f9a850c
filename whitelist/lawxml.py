"""Importing an appended table from the official law XML (e-Gov 法令標準XML).

An appended table is ``AppdxTable`` holding ``TableStruct/Table``: ``TableRow`` elements of
``TableColumn`` cells, each cell's text in ``Sentence`` elements (a header row is a
``TableHeaderRow``). A cell spanning several rows (``rowspan``) stands in each of them, as the
item, requester and task of a row with several providers do. Each data row has five cells: the
item number (kanji, e.g. 七十四), the requester (情報照会者), the task (事務), the provider
(情報提供者) and the information (特定個人情報).

A mapping file (the format of ``data/annex2-2015/mapping.yaml``, docs/whitelist.md) turns the
statutory wording into role, task and info ids, exactly as the shipped CSV is turned. A row the
mapping cannot place is reported with its element and the text no mapping names, and the import
refuses: nothing of a table is loaded that would silently drop a row of the law.

The XML is untrusted input: it is read up to :data:`~whitelist.sources.MAX_FILE_BYTES`, and a
document with a DOCTYPE or an entity declaration is refused before parsing (no entity is ever
expanded); the parser is the standard library's.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from whitelist.annex2 import ANNEX2_DIR
from whitelist.catalog import read_yaml
from whitelist.models import Catalog
from whitelist.sources import RowSpec, SourceFileError, SourceMeta, read_bytes

# Markup that could declare or expand entities: refused wherever it appears.
_FORBIDDEN = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_ITEM = re.compile(r"^[一二三四五六七八九十百]+(の[一二三四五六七八九十]+)*$")
COLUMNS = ("item", "requester", "task", "provider", "info")


class StatutoryRow(BaseModel):
    """One data row of the table, its spans filled in; ``where`` is its element path."""

    where: str
    item: str
    requester: str
    task: str
    provider: str
    info: str


class ImportedTable(BaseModel):
    """The rows of a law XML table placed by a mapping, ready to load as a source."""

    meta: SourceMeta
    rows: list[RowSpec]
    statutory: int
    content_hash: str


def _text(cell: ET.Element) -> str:
    return "".join("".join(s.itertext()) for s in cell.iter("Sentence")).strip()


def parse_table(path: Path, data: bytes) -> list[StatutoryRow]:
    """The data rows of the (first) appended table in ``data``; refused, located, if the
    document is not such a table."""
    try:  # UTF-8 only: a declaration hidden in another encoding is not looked past
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SourceFileError([f"{path}:{line}: not UTF-8 text"]) from None
    forbidden = _FORBIDDEN.search(text)
    if forbidden is not None:
        line = text[: forbidden.start()].count("\n") + 1
        raise SourceFileError([f"{path}:{line}: refused: a DOCTYPE or ENTITY declaration"])
    try:
        root = ET.fromstring(re.sub(r"^<\?xml[^>]*\?>", "", text.lstrip("\ufeff")))
    except ET.ParseError as err:
        line, col = err.position
        raise SourceFileError([f"{path}:{line}:{col}: not well-formed XML"]) from None
    table = root if root.tag == "AppdxTable" else root.find(".//AppdxTable")
    if table is None:
        raise SourceFileError([f"{path}: no AppdxTable element (an appended table)"])
    body = table.find("./TableStruct/Table")
    if body is None:
        raise SourceFileError([f"{path}: AppdxTable: no TableStruct/Table"])
    problems: list[str] = []
    rows: list[StatutoryRow] = []
    # The cells still spanning down from a row above: column index -> (rows left, text).
    spanning: dict[int, tuple[int, str]] = {}
    for n, tr in enumerate(body.findall("TableRow"), start=1):
        where = f"{path}: AppdxTable/TableStruct/Table/TableRow[{n}]"
        cells = iter(tr.findall("TableColumn"))
        values: list[str] = []
        for col in range(len(COLUMNS)):
            if col in spanning:
                left, text = spanning[col]
                values.append(text)
                if left > 1:
                    spanning[col] = (left - 1, text)
                else:
                    del spanning[col]
                continue
            cell = next(cells, None)
            if cell is None:
                break
            text = _text(cell)
            span = cell.get("rowspan", "1")
            if not span.isdigit() or not 1 <= int(span) <= 10_000:
                problems.append(f"{where}/TableColumn[{col + 1}]: rowspan {span!r} is not a count")
                span = "1"
            if int(span) > 1:
                spanning[col] = (int(span) - 1, text)
            values.append(text)
        extra = list(cells)
        if len(values) != len(COLUMNS) or extra:
            problems.append(
                f"{where}: {len(values) + len(extra)} cells, {len(COLUMNS)} expected"
                f" ({', '.join(COLUMNS)})"
            )
            continue
        row = dict(zip(COLUMNS, values, strict=True))
        if not _ITEM.match(row["item"]):
            problems.append(f"{where}/TableColumn[1]: {row['item'][:20]!r} is not an item number")
            continue
        empty = [c for c in COLUMNS if not row[c]]
        if empty:
            problems.append(f"{where}: empty cells: {', '.join(empty)}")
            continue
        rows.append(StatutoryRow(where=where, **row))
    if not rows and not problems:
        problems.append(f"{path}: the table has no data rows")
    if problems:
        raise SourceFileError(problems)
    return rows


def _mapping(path: Path) -> dict[str, Any]:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise SourceFileError([f"{path}: a mapping file is a YAML mapping"])
    return data


def place(
    rows: list[StatutoryRow], mapping: dict[str, Any], catalog: Catalog
) -> tuple[list[RowSpec], list[str]]:
    """(the structured rows, the rows the mapping cannot place, located). Every row becomes one
    entry per (requester role × provider role × info item), as the shipped CSV does."""
    suffix: str = mapping.get("suffix", "")
    parties = {p["text"]: p["roles"] for p in mapping["parties"]}
    infos = {i["text"]: i["items"] for i in mapping["info"]}
    tasks = {t["text"]: t["task"] for t in mapping["tasks"]}
    citation = f"{mapping['citation']} {{item}}項"
    specs: dict[tuple[str, ...], RowSpec] = {}
    unplaced: list[str] = []
    for row in rows:
        requesters = parties.get(row.requester)
        providers = parties.get(row.provider)
        task = tasks.get(row.task.removesuffix(suffix))
        info = infos.get(row.info.removesuffix(suffix))
        missing = [
            f"{what} {text[:40]!r}"
            for what, text, found in (
                ("requester", row.requester, requesters),
                ("task", row.task, task),
                ("provider", row.provider, providers),
                ("info", row.info, info),
            )
            if found is None
        ]
        if missing:
            unplaced.append(f"{row.where} (item {row.item}): no mapping for {'; '.join(missing)}")
            continue
        assert requesters is not None and providers is not None and info is not None
        assert task is not None
        cited = citation.replace("{item}", row.item)
        legal = f"{cited}: {row.requester} | {row.task} | {row.provider} | {row.info}"
        for r, p, i in itertools.product(requesters, providers, info):
            key = (row.item, r, p, i)
            if key in specs:  # the statute lists the same provider twice: one entry
                continue
            for kind, ident, known in (
                ("role", r, catalog.roles),
                ("role", p, catalog.roles),
                ("task", task, catalog.tasks),
                ("info item", i, catalog.info_items),
            ):
                if ident not in known:
                    unplaced.append(f"{row.where}: the mapping names unknown {kind} {ident!r}")
            specs[key] = RowSpec(
                item=row.item,
                requester_role=r,
                task=task,
                provider_role=p,
                info=i,
                legal_text=legal,
                where=row.where,
            )
    return list(specs.values()), unplaced


def read_law_xml(path: Path, mapping_path: Path | None, catalog: Catalog) -> ImportedTable:
    """Import the appended table of a law XML file with a mapping (default: the 2015 table's);
    refused, located, if the file is malformed or a row cannot be placed."""
    data = read_bytes(path)
    rows = parse_table(path, data)
    mpath = mapping_path or ANNEX2_DIR / "mapping.yaml"
    mapping = _mapping(mpath)
    specs, unplaced = place(rows, mapping, catalog)
    if unplaced:
        raise SourceFileError(
            [
                f"{len(unplaced)} rows the mapping {mpath.name} cannot place (nothing loaded):",
                *unplaced,
            ]
        )
    meta = SourceMeta(
        title=mapping.get("title"),
        citation=f"{mapping['citation']} {{item}}項",
        valid_from=mapping.get("valid_from"),
        valid_to=mapping.get("valid_to"),
        stand_in_from=mapping.get("stand_in_from"),
        stand_in_note=mapping.get("stand_in_note"),
    )
    return ImportedTable(
        meta=meta,
        rows=specs,
        statutory=len(rows),
        content_hash=hashlib.sha256(data).hexdigest(),
    )


def table_xml(rows: Iterator[tuple[str, str, str, str, str]], title: str) -> str:
    """An appended table in the law XML's form, from (item, requester, task, provider, info)
    rows in order; consecutive rows of one item share its item, requester and task cells
    (``rowspan``), as the official text does. Used to build test fixtures."""
    appdx = ET.Element("AppdxTable", {"Num": "2"})
    ET.SubElement(appdx, "AppdxTableTitle").text = title
    table = ET.SubElement(ET.SubElement(appdx, "TableStruct"), "Table")
    header = ET.SubElement(table, "TableHeaderRow")
    for text in ("", "情報照会者", "事務", "情報提供者", "特定個人情報"):
        ET.SubElement(header, "TableHeaderColumn").text = text
    listed = list(rows)
    i = 0
    while i < len(listed):
        head = listed[i][:3]
        item, requester, task = head
        group = [listed[i]]
        while i + len(group) < len(listed) and listed[i + len(group)][:3] == head:
            group.append(listed[i + len(group)])
        for k, (_, _, _, provider, info) in enumerate(group):
            tr = ET.SubElement(table, "TableRow")
            spans = [item, requester, task] if k == 0 else []
            for n, text in enumerate([*spans, provider, info]):
                col = ET.SubElement(tr, "TableColumn")
                if n < len(spans) and len(group) > 1:
                    col.set("rowspan", str(len(group)))
                ET.SubElement(col, "Sentence").text = text
        i += len(group)
    law = ET.Element("Law", {"Era": "Heisei", "Lang": "ja", "LawType": "Act", "Num": "027"})
    ET.SubElement(law, "LawNum").text = "平成二十五年法律第二十七号"
    ET.SubElement(law, "LawBody").append(appdx)
    ET.indent(law)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(law, encoding="unicode") + "\n"
