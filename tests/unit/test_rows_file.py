"""Rows files (CSV, YAML) read whole or refused with every problem located."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from whitelist.catalog import default_catalog
from whitelist.models import Source
from whitelist.sources import MAX_FILE_BYTES, SourceFileError, build_rows, read_rows_file

CATALOG = default_catalog()
SOURCE = Source(id="o", title="命令", citation="命令 第{item}条", valid_from=dt.date(2027, 1, 1))


def test_a_csv_with_a_bom_and_quoted_wording_reads_into_rows(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text(
        "\ufeffitem,requester_role,task,provider_role,info,legal_text\n"
        '2,municipal-mayor,child-allowance,municipal-mayor,local-tax,"児童手当, 地方税"\n',
        encoding="utf-8",
    )
    found = read_rows_file(path)
    [row] = build_rows(SOURCE, found.rows, CATALOG)
    assert (row.item, row.legal_text, row.valid_from) == (
        "命令 第2条",
        "児童手当, 地方税",
        SOURCE.valid_from,
    )
    assert len(found.content_hash) == 64


def test_a_yaml_file_carries_its_sources_fields(tmp_path: Path) -> None:
    path = tmp_path / "o.yaml"
    path.write_text(
        "title: 命令\ncitation: '命令 第{item}条'\nvalid_from: 2027-01-01\nsupersedes: annex2-2015\n"
        "rows:\n  - {item: 2, requester_role: municipal-mayor, task: child-allowance,"
        " provider_role: municipal-mayor, info: local-tax, sub_info: local-tax-income-basis}\n",
        encoding="utf-8",
    )
    found = read_rows_file(path)
    assert found.meta.valid_from == dt.date(2027, 1, 1) and found.meta.supersedes == "annex2-2015"
    [row] = build_rows(SOURCE, found.rows, CATALOG)
    assert row.sub_info == "local-tax-income-basis" and row.item == "命令 第2条"


def test_every_problem_is_listed_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text(
        "item,requester_role,task,provider_role,info,scope\n"
        "1,municipal-mayor,child-allowance,municipal-mayor,local-tax,\n"
        "2,Mayor,child-allowance,municipal-mayor,local-tax,\n"
        "3,municipal-mayor,child-allowance,municipal-mayor,local-tax,everywhere\n",
        encoding="utf-8",
    )
    with pytest.raises(SourceFileError) as err:
        read_rows_file(path)
    assert [p.split(": ")[0].rsplit("/", 1)[-1] for p in err.value.problems] == [
        "o.csv:3",
        "o.csv:4",
    ]
    assert "requester_role" in err.value.problems[0] and "scope" in err.value.problems[1]
    unknown = tmp_path / "u.csv"
    unknown.write_text(
        "item,requester_role,task,provider_role,info\n1,municipal-mayor,no-task,municipal-mayor,local-tax\n",
        encoding="utf-8",
    )
    with pytest.raises(SourceFileError, match=r"u\.csv:2: task: unknown id 'no-task'"):
        build_rows(SOURCE, read_rows_file(unknown).rows, CATALOG)


def test_a_file_too_long_or_of_another_kind_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    with pytest.raises(SourceFileError, match="longer than"):
        read_rows_file(big)
    other = tmp_path / "rows.json"
    other.write_text("{}", encoding="utf-8")
    with pytest.raises(SourceFileError, match=r"\.csv, \.yaml or \.yml"):
        read_rows_file(other)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"item,requester_role\n" + "é".encode("latin-1"))
    with pytest.raises(SourceFileError, match=r"latin\.csv:2: not UTF-8 text"):
        read_rows_file(latin)
