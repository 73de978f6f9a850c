"""What a worker shares between the workflow runs it caches, and what it does not."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from renkei.bpf.cel.program import shared_definition
from renkei.bpf.loader import load_file
from workers.plugin import _KeepCode, _KeptCode, keep_code

WAIT_ONLY = Path(__file__).resolve().parents[2] / "bench" / "definitions" / "wait-only.yaml"


def _fresh(name: str) -> object:
    """A fresh module of ``name``, as the sandbox makes one for each run."""
    spec = _KeepCode().find_spec(name, _parent_path(name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parent_path(name: str) -> list[str]:
    return list(importlib.import_module(name.rpartition(".")[0]).__path__)


def test_runs_share_the_code_and_not_the_module() -> None:
    keep_code()
    one, two = _fresh("workflows.hub_calls"), _fresh("workflows.hub_calls")
    assert one is not two
    assert one.hub_call is not two.hub_call  # type: ignore[attr-defined]
    assert one.hub_call.__code__ is two.hub_call.__code__  # type: ignore[attr-defined]
    one.HUB_RETRY = None  # type: ignore[attr-defined]
    assert two.HUB_RETRY is not None  # type: ignore[attr-defined]


def test_only_renkeis_own_modules() -> None:
    assert _KeepCode().find_spec("json", None) is None
    spec = _KeepCode().find_spec("workflows.interpreter", _parent_path("workflows.interpreter"))
    assert spec is not None and isinstance(spec.loader, _KeptCode)


def test_an_edited_file_is_read_anew(tmp_path: Path) -> None:
    source = tmp_path / "edited.py"
    source.write_text("VALUE = 1\n")
    first = _KeptCode("edited", str(source)).get_code("edited")
    assert _KeptCode("edited", str(source)).get_code("edited") is first
    source.write_text("VALUE = 22\n")
    later = source.stat().st_mtime + 5
    os.utime(source, (later, later))
    namespace: dict[str, object] = {}
    exec(_KeptCode("edited", str(source)).get_code("edited"), namespace)
    assert namespace["VALUE"] == 22


def test_a_source_that_does_not_compile_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "broken.py"
    source.write_text("def (:\n")
    with pytest.raises(SyntaxError):
        _KeptCode("broken", str(source)).get_code("broken")


def test_one_definition_per_content() -> None:
    first, again = load_file(WAIT_ONLY).definition, load_file(WAIT_ONLY).definition
    assert first is not again and first == again
    key = "sha256:test-one-definition-per-content"
    assert shared_definition(key, first) is first
    assert shared_definition(key, again) is first
