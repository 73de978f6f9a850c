"""The README's main job: ``renkei demo`` on a fresh data folder exits 0 (every sample flow took
the outcome it should, the history holds no code in clear, the chains verify)."""

from __future__ import annotations

import subprocess
import sys

from .conftest import FirstRun, own_stack_env


def test_the_demo_runs_clean_on_a_fresh_data_folder(first_run: FirstRun) -> None:
    """The demo is the session's first run of a fresh folder (``first_run``: the tests of
    ``renkei up`` start on the folder it leaves)."""
    done = first_run.demo
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "subject code in the raw history: no" in done.stdout
    assert ": intact" in done.stdout


def test_conformance_as_the_first_command_on_a_fresh_data_folder(tmp_path) -> None:
    """A new engineer's first command may be the conformance kit, not the demo: it issues the
    sample orgs' keys itself, and reads the flows it runs under them."""
    done = subprocess.run(
        [sys.executable, "-m", "renkei.app.cli", "conformance", "child-allowance-check"],
        cwd=tmp_path,
        env=own_stack_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "scenarios passed: PASSED" in done.stdout
