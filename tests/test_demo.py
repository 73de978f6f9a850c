"""The README's main job: ``renkei demo`` on a fresh data folder exits 0 (every sample flow took
the outcome it should, the history holds no code in clear, the chains verify)."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import free_port
from .processes import ROOT


def _fresh_env(tmp_path) -> dict[str, str]:
    """No renkei setting of the caller's; a fresh data folder; ports of the test's own (the
    defaults may be taken by another stack on the machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKEI_")}
    env["RENKEI_DATA_DIR"] = str(tmp_path / "data")
    for name in ("RENKEI_TEMPORAL_PORT", "RENKEI_UI_PORT", "RENKEI_WEB_PORT"):
        env[name] = str(free_port())
    return env


def test_the_demo_runs_clean_on_a_fresh_data_folder(tmp_path) -> None:
    env = _fresh_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "renkei.app.cli", "demo"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "subject code in the raw history: no" in done.stdout
    assert ": intact" in done.stdout


def test_conformance_as_the_first_command_on_a_fresh_data_folder(tmp_path) -> None:
    """A new engineer's first command may be the conformance kit, not the demo: it issues the
    sample orgs' keys itself, and reads the flows it runs under them."""
    env = _fresh_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "renkei.app.cli", "conformance", "child-allowance-check"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "scenarios passed: PASSED" in done.stdout
