"""The package installs without the checkout: its data ships inside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.paths import PROJECT_ROOT, SAMPLES_DIR


def test_the_wheel_carries_what_the_installed_package_reads(tmp_path: Path) -> None:
    # Built from a copy, so the build leaves nothing behind in the checkout.
    source = tmp_path / "src"
    shutil.copytree(
        PROJECT_ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", ".renkei", "build", "*.egg-info", "test-*"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("renkei-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for sample in SAMPLES_DIR.rglob("*.yaml"):
        assert f"renkei/definitions/{sample.relative_to(SAMPLES_DIR).as_posix()}" in names
    migrations = (PROJECT_ROOT / "renkei" / "kernel" / "migrations").glob("*.sql")
    assert {f"renkei/kernel/migrations/{m.name}" for m in migrations} <= names
    assert "renkei/app/data/tariffs.yaml" in names
    assert "renkei/py.typed" in names
    assert "whitelist/data/annex2-2015/annex2-2015.csv" in names
    assert "whitelist/data/catalog/orgs.yaml" in names
    assert "renkei/app/web/static/portal.css" in names
    # Benchmarks and tests run from a checkout; they claim no module name in site-packages.
    assert not [n for n in names if n.startswith(("bench/", "tests/"))]
