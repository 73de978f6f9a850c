"""YAML from users is read in bounded time and memory: alias bombs, deep nesting and recursive
anchors are refused with the file and line, before anything is built."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from renkei.app.billing import load_model
from renkei.app.kit.scenarios import load_scenarios
from renkei.bpf.loader import BpfFileError, load_file, parse_text
from renkei.kernel.yaml_limits import MAX_ALIASES, MAX_DEPTH, MAX_NODES, YamlFileError

SAMPLE = Path(__file__).parents[2] / "renkei" / "definitions" / "child-allowance.yaml"

# Nine levels of nine aliases each: a few hundred bytes, 9**9 nodes once expanded.
LAUGHS = "lol: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)
)
DEEP = "title: " + "[" * 100_000 + "]" * 100_000 + "\n"


def _one(text: str) -> str:
    with pytest.raises(BpfFileError) as err:
        parse_text(text, "bomb.yaml")
    [issue] = err.value.issues
    assert issue.file == "bomb.yaml" and issue.line is not None
    return str(issue)


def test_an_alias_bomb_is_refused_at_its_line() -> None:
    text = SAMPLE.read_text(encoding="utf-8") + LAUGHS
    start = text.count("\n", 0, text.index("lol:"))
    message = _one(text)
    assert f"more than {MAX_NODES} nodes" in message
    line = int(message.split(":")[1])
    assert start < line <= start + 10


def test_nesting_past_the_limit_is_refused_not_a_recursion_error() -> None:
    assert f"deeper than {MAX_DEPTH} levels" in _one(DEEP)
    assert _one(DEEP).startswith("bomb.yaml:1: ")


def test_a_recursive_anchor_and_too_many_aliases_are_refused() -> None:
    assert "inside the node its anchor names" in _one("bpf: &a [1, *a]\n")
    many = "a: &a x\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    assert f"more than {MAX_ALIASES} aliases" in _one(many)


def test_a_few_aliases_are_still_yaml() -> None:
    text = SAMPLE.read_text(encoding="utf-8").replace(
        "triggers: [counter, portal]", "x-triggers: &t [counter, portal]\ntriggers: *t"
    )
    with pytest.raises(BpfFileError) as err:  # parsed: refused only for the unknown key
        parse_text(text, "ok.yaml")
    assert "unknown key `x-triggers`" in str(err.value)


def test_the_scenario_and_billing_model_files_are_read_within_the_same_limits(
    tmp_path: Path,
) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(LAUGHS, encoding="utf-8")
    for read in (load_scenarios, load_model):
        with pytest.raises(YamlFileError, match=rf"^{bomb}:\d+: refused: .*{MAX_NODES} nodes"):
            read(bomb)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: 1\nb: [\n", encoding="utf-8")
    with pytest.raises(YamlFileError, match=rf"^{broken}:\d+: not valid YAML"):
        load_scenarios(broken)


def test_a_huge_file_is_not_read_whole(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("w") as f:
        f.write("# " + "x" * 5_000_000 + "\n")
    with pytest.raises(BpfFileError, match="longer than"):
        load_file(huge)


def _limited() -> None:  # the child may use 3 GiB at most
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


@pytest.mark.parametrize("kind", ["bomb", "deep"])
def test_bpf_validate_answers_a_bomb_in_bounded_time_and_memory(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_text(
        SAMPLE.read_text(encoding="utf-8") + LAUGHS if kind == "bomb" else DEEP, encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, "-m", "renkei.app.cli", "bpf", "validate", "--offline", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limited,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert f"{path}:" in line and "refused" in line
