"""The run-directory contract (DESIGN §3): manifest, atomic outputs, lock, cache, --force."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from gesture_cli.core.errors import ArtifactError
from gesture_cli.core.rundir import RunDir, fingerprint


def _write_step(run: RunDir, value: str, *, force: bool = False, fail: bool = False, config=None):
    step = run.begin("demo-step", config=config or {"v": 1}, outputs=["out"], force=force, argv=["gx", "t"])
    if step.cached:
        return step
    with step:
        d = step.stage("out")
        (d / "a.txt").write_text(value)
        step.metrics["value"] = value
        if fail:
            raise RuntimeError("boom mid-step")
    return step


def test_manifest_records_provenance(tmp_path):
    run = RunDir(tmp_path / "r1")
    _write_step(run, "hello")
    m = json.loads((tmp_path / "r1" / "run.json").read_text())
    assert m["schema"] == 1 and m["name"] == "r1"
    (s,) = m["steps"]
    assert s["command"] == "demo-step" and s["status"] == "ok"
    assert s["config"] == {"v": 1} and s["argv"] == ["gx", "t"]
    assert s["versions"]["gx"] and s["start"] and s["end"] and s["duration_s"] >= 0
    assert s["outputs"] == ["out"] and s["metrics"] == {"value": "hello"}
    assert len(s["cache_key"]) == 24
    assert (tmp_path / "r1" / "out" / "a.txt").read_text() == "hello"


def test_exception_mid_step_leaves_no_partial_output_and_keeps_old(tmp_path):
    run = RunDir(tmp_path / "r")
    _write_step(run, "good")
    with pytest.raises(RuntimeError):
        _write_step(run, "bad", force=True, fail=True)
    assert (tmp_path / "r" / "out" / "a.txt").read_text() == "good"  # what the user had is kept
    leftovers = [p.name for p in (tmp_path / "r").iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []
    statuses = [s["status"] for s in run.steps()]
    assert statuses == ["ok", "failed"]
    assert "boom mid-step" in run.steps()[-1]["error"]


def test_keyboard_interrupt_marks_interrupted(tmp_path):
    run = RunDir(tmp_path / "r")
    step = run.begin("demo-step", config={}, outputs=["out"])
    with pytest.raises(KeyboardInterrupt):
        with step:
            (step.stage("out") / "x").write_text("half")
            raise KeyboardInterrupt
    assert not (tmp_path / "r" / "out").exists()
    assert run.steps()[-1]["status"] == "interrupted"


def test_cache_hit_and_force(tmp_path):
    run = RunDir(tmp_path / "r")
    assert not _write_step(run, "one").cached
    assert _write_step(run, "two").cached  # same config and inputs: skipped
    assert (tmp_path / "r" / "out" / "a.txt").read_text() == "one"
    assert not _write_step(run, "three", force=True).cached
    assert (tmp_path / "r" / "out" / "a.txt").read_text() == "three"
    assert not _write_step(run, "four", config={"v": 2}).cached  # config change: recompute


def test_cache_never_returns_outputs_overwritten_by_a_later_step(tmp_path):
    run = RunDir(tmp_path / "r")
    assert not _write_step(run, "A", config={"v": "A"}).cached
    assert not _write_step(run, "B", config={"v": "B"}).cached  # same output folder, other config
    assert not _write_step(run, "A again", config={"v": "A"}).cached  # A's files were replaced by B's
    assert (tmp_path / "r" / "out" / "a.txt").read_text() == "A again"
    assert _write_step(run, "A thrice", config={"v": "A"}).cached


def test_cache_miss_when_input_changes_or_output_deleted(tmp_path):
    run = RunDir(tmp_path / "r")
    src = tmp_path / "data.csv"
    src.write_text("1,2,3\n")

    def go():
        step = run.begin("s", config={}, inputs=[src], outputs=["o"])
        if not step.cached:
            with step:
                (step.stage("o") / "f").write_text("x")
        return step.cached

    assert go() is False
    assert go() is True
    src.write_text("1,2,4\n")
    assert go() is False
    import shutil

    shutil.rmtree(tmp_path / "r" / "o")
    assert go() is False


def test_fingerprint_changes_with_content(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("1")
    f1 = fingerprint(d)
    (d / "b").write_text("2")
    assert fingerprint(d) != f1
    assert fingerprint(tmp_path / "nope") == "missing"


def _parallel_writer(root: str, i: int) -> None:
    run = RunDir(root)
    for j in range(10):
        step = run.begin(f"w{i}", config={"j": j}, outputs=[f"o{i}-{j}"])
        with step:
            (step.stage(f"o{i}-{j}") / "f").write_text(str(j))


def test_lock_with_parallel_writers_loses_no_entry(tmp_path):
    root = str(tmp_path / "r")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_parallel_writer, args=(root, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    steps = RunDir(root).steps()
    assert len(steps) == 40
    assert all(s["status"] == "ok" for s in steps)


def test_corrupt_manifest_is_a_clean_error(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        RunDir(tmp_path / "r").steps()


def test_stage_rejects_undeclared_output(tmp_path):
    step = RunDir(tmp_path / "r").begin("s", config={}, outputs=["a"])
    with pytest.raises(ValueError):
        with step:
            step.stage("b")
    assert not Path(tmp_path / "r" / "b").exists()


@pytest.mark.parametrize("content, why", [
    ("[]", "it holds a list, not a mapping"),
    ('{"steps": "x"}', "'steps' is a string, not a list"),
    ('{"steps": [1]}', "step 1 is a number, not a mapping"),
    ('{"steps": [{"command": "probe", "metrics": []}]}', "step 1: 'metrics' is a list, not a mapping"),
    ('{"schema": "one", "steps": []}', "'schema' is a string, not a whole number"),
])
def test_a_manifest_of_the_wrong_shape_is_a_corrupt_manifest(tmp_path, content, why):
    """Valid JSON that is no manifest gave AttributeError ('list' object has no attribute 'get') everywhere."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text(content)
    run = RunDir(tmp_path / "r")
    with pytest.raises(ArtifactError, match="corrupt manifest") as info:
        run.read_manifest()
    assert why in str(info.value) and str(tmp_path / "r" / "run.json") in str(info.value)
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        run.begin("s", config={}, outputs=["a"])
