"""A pooled connection is given back without asyncpg's reset query (``renkei.kernel.db``): this
holds only while no code leaves session state on a pooled connection. These tests read the
project's sources for what would: a session-level ``SET``, an advisory lock held past its
transaction, a ``LISTEN``, a cursor held past its transaction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("renkei", "activities", "workers", "whitelist", "workflows", "bench")

# What would outlive a transaction on a pooled connection, and where it is allowed: the pool's
# own role, set once as a connection opens; the migration runner's lock, on a connection of its
# own; the live whitelist's listener, on a connection of its own.
SESSION_STATE = {
    # a statement that begins with SET (an UPDATE's SET clause continues a string)
    "a session-level SET": re.compile(
        r"""(\(\s*f?["']|;)\s*SET\s+(?!LOCAL\b)"""  # the project writes SQL in capitals
    ),
    "a session-level set_config": re.compile(r"set_config\s*\([^)]*false", re.IGNORECASE),
    "an advisory lock held past its transaction": re.compile(
        r"pg_(try_)?advisory_lock(_shared)?\s*\(", re.IGNORECASE
    ),
    "a LISTEN": re.compile(r"""(["']\s*LISTEN\s|add_listener\s*\()"""),
    "a cursor held past its transaction": re.compile(r"WITH\s+HOLD"),
}
ALLOWED = {
    ("renkei/kernel/db.py", "a session-level SET"),  # the pool's role, in _init_connection
    ("renkei/kernel/db.py", "an advisory lock held past its transaction"),  # the migrations'
    ("whitelist/live.py", "a LISTEN"),  # its own connection (asyncpg.connect)
}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _found(text: str) -> set[str]:
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # comments aside
    return {what for what, pattern in SESSION_STATE.items() if pattern.search(code)}


def test_no_code_leaves_session_state_on_a_pooled_connection() -> None:
    found = {(str(p.relative_to(ROOT)), what) for p in _sources() for what in _found(p.read_text())}
    assert found - ALLOWED == set(), (
        "session state that a pooled connection would carry to its next user: reset it where it"
        " is set, or give the pool a reset that undoes it (renkei.kernel.db._released)"
    )


def test_the_allowed_ones_are_where_they_are_allowed() -> None:
    db = (ROOT / "renkei/kernel/db.py").read_text()
    # The one session SET is the pool's role, as a connection opens.
    assert re.findall(r"""\(\s*f?["']\s*SET\s+(?!LOCAL\b)\w+""", db) == ["(f'SET ROLE"]
    assert "init=init" in db and "reset=_released" in db
    live = (ROOT / "whitelist/live.py").read_text()
    # its own connection (renkei.kernel.db.connect), not one of a pool's
    assert "self._conn = await connect(" in live and ".acquire(" not in live


@pytest.mark.parametrize(
    "snippet",
    [
        'await conn.execute("SET statement_timeout = 100")',
        "await conn.execute(\"SELECT set_config('app.org', $1, false)\", org)",
        'await conn.execute("SELECT pg_advisory_lock($1)", 7)',
        'await conn.execute("LISTEN changes")',
        'await conn.execute("DECLARE c CURSOR WITH HOLD FOR SELECT 1")',
    ],
)
def test_each_kind_is_caught(snippet: str) -> None:
    assert _found(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        'await conn.execute("SET LOCAL ROLE NONE")',
        "await conn.execute(\"SELECT set_config('app.org', $1, true)\", org)",
        'await conn.execute("SELECT pg_advisory_xact_lock($1)", 7)',
        '# await conn.execute("SET statement_timeout = 100")',
    ],
)
def test_what_ends_with_its_transaction_passes(snippet: str) -> None:
    assert not _found(snippet), snippet
