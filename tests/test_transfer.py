"""`gx runs export` / `gx runs import`: round trip, --only best, checksums, hostile archives, --force, quiet logs."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path

import pytest

from gesture_cli.core.errors import ArtifactError, UsageError
from gesture_cli.core.rundir import RunDir
from gesture_cli.core.transfer import export_run, import_run
from tests.conftest import invoke


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one-line messages stay one line


def make_run(root: Path, *, name: str = "mnist", extra_files: int = 0) -> Path:
    """A run directory written through RunDir like a real lora-train: artifacts, best/ and last/ checkpoints."""
    run = RunDir(root / name)
    step = run.begin("lora-train", config={"epochs": 1}, outputs=["lora/tiny-dinov2"])
    with step:
        out = step.stage("lora/tiny-dinov2")
        files = {
            "head.safetensors": os.urandom(3000),
            "adapter/adapter_model.safetensors": os.urandom(5000),
            "metrics.json": b'{"accuracy": 0.5}\n',
            "train_log.csv": b"step,loss\n1,3.2\n",
            "checkpoints/best/model.safetensors": os.urandom(4000),
            "checkpoints/best/state.json": b'{"step": 1}\n',
            "checkpoints/last/model.safetensors": os.urandom(4000),
            "checkpoints/last/optimizer.safetensors": os.urandom(8000),
            "checkpoints/last/state.json": b'{"trainer": {"finished": true}}\n',
        }
        files.update({f"many/{i:04d}.json": b"{}\n" for i in range(extra_files)})
        for rel, data in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
        step.metrics["accuracy"] = 0.5
    (run.root / ".features.tmp-0123abcd").mkdir()  # a step being written right now: never exported
    (run.root / ".features.tmp-0123abcd" / "part.bin").write_bytes(b"half")
    return run.root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def exported_tree(run_dir: Path, *, only_best: bool = False) -> dict[str, bytes]:
    skip_last = "/checkpoints/last/"
    return {k: v for k, v in tree(run_dir).items()
            if not k.startswith(".") and not (only_best and skip_last in f"/{k}")}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


# ---- round trip ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tar.zst", ".tar.gz"])
def test_export_import_round_trip(runner, tmp_path, suffix):
    run_dir = make_run(tmp_path / "gpu")
    archive = tmp_path / f"mnist{suffix}"
    res = invoke(runner, "runs", "export", run_dir, "-o", archive)
    assert res.exit_code == 0, res.output
    assert f"Exported {run_dir} -> {archive} (10 files" in " ".join(res.output.split())

    with tarfile.open(archive) if suffix == ".tar.gz" else _open_zst(archive) as tar:
        names = tar.getnames()
        sums = tar.extractfile("mnist/SHA256SUMS").read().decode()
    assert names[-1] == "mnist/SHA256SUMS" and all(n.startswith("mnist/") for n in names)
    assert not any("tmp-" in n or n.endswith(".lock") for n in names)
    for rel, data in exported_tree(run_dir).items():  # `sha256sum -c` format, one line per file
        assert f"{hashlib.sha256(data).hexdigest()}  {rel}\n" in sums

    res = invoke(runner, "runs", "import", archive, "--into", tmp_path / "laptop")
    assert res.exit_code == 0, res.output
    assert "checksums verified" in res.output
    imported = tmp_path / "laptop" / "mnist"
    assert tree(imported) == exported_tree(run_dir)  # byte for byte, SHA256SUMS not left behind
    assert RunDir(imported).last_ok("lora-train")["metrics"] == {"accuracy": 0.5}
    assert leftovers(tmp_path / "laptop") == []
    show = invoke(runner, "runs", "show", imported)
    assert show.exit_code == 0 and "lora-train" in show.output


def _open_zst(path: Path) -> tarfile.TarFile:
    import zstandard

    data = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
    return tarfile.open(fileobj=io.BytesIO(data))


def test_only_best_leaves_out_last_checkpoints(runner, tmp_path):
    run_dir = make_run(tmp_path)
    archive = tmp_path / "best.tar.gz"
    res = invoke(runner, "runs", "export", run_dir, "--only", "best", "-o", archive)
    assert res.exit_code == 0, res.output
    assert "left out lora/tiny-dinov2/checkpoints/last/ (3 files, 12.0 kB)" in " ".join(res.output.split())
    res = import_run(archive, tmp_path / "in")
    assert tree(res.run_dir) == exported_tree(run_dir, only_best=True)
    assert (res.run_dir / "lora/tiny-dinov2/checkpoints/best/model.safetensors").is_file()
    assert not (res.run_dir / "lora/tiny-dinov2/checkpoints/last").exists()


def test_export_refusals(runner, tmp_path):
    run_dir = make_run(tmp_path)
    with pytest.raises(UsageError, match="not a run directory"):
        export_run(tmp_path / "nothing", tmp_path / "x.tar.gz")
    with pytest.raises(UsageError, match="NAME.tar.zst, NAME.tar.gz"):
        export_run(run_dir, tmp_path / "x.zip")
    with pytest.raises(UsageError, match="inside the run directory"):
        export_run(run_dir, run_dir / "self.tar.gz")
    (tmp_path / "x.tar.gz").write_bytes(b"keep me")
    res = invoke(runner, "runs", "export", run_dir, "-o", tmp_path / "x.tar.gz")
    assert res.exit_code == 2 and "already exists; pass --force" in res.output
    assert (tmp_path / "x.tar.gz").read_bytes() == b"keep me"
    assert invoke(runner, "runs", "export", run_dir, "-o", tmp_path / "x.tar.gz", "--force").exit_code == 0
    res = invoke(runner, "runs", "export", run_dir, "--only", "last", "-o", tmp_path / "y.tar.gz")
    assert res.exit_code == 2 and "--only takes 'best'" in res.output
    assert leftovers(tmp_path) == []


def test_zst_without_zstandard_suggests_gz(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path)
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard now raises ImportError
    with pytest.raises(UsageError, match=r"needs the zstandard package .*use \.tar\.gz instead"):
        export_run(run_dir, tmp_path / "x.tar.zst")
    assert not (tmp_path / "x.tar.zst").exists()


# ---- checksums -------------------------------------------------------------------------------------


def rewrite(archive: Path, out: Path, change) -> Path:
    """Copy a .tar.gz member by member; change(info, data) -> (info, data) or None to drop the member."""
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else b""
            changed = change(info, data)
            if changed is not None:
                info, data = changed
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i, d: (i, bytes([d[0] ^ 1]) + d[1:]) if i.name.endswith("head.safetensors") else (i, d),
         "mnist/lora/tiny-dinov2/head.safetensors does not match its checksum in SHA256SUMS"),
        (lambda i, d: None if i.name.endswith("metrics.json") else (i, d),
         "mnist/lora/tiny-dinov2/metrics.json is listed in SHA256SUMS but missing from the archive"),
        (lambda i, d: None if i.name.endswith("SHA256SUMS") else (i, d), "no mnist/SHA256SUMS in it"),
    ],
    ids=["tampered", "missing", "no-sums"],
)
def test_import_refuses_archives_that_do_not_match_their_checksums(runner, tmp_path, change, message):
    good = export_run(make_run(tmp_path / "gpu"), tmp_path / "good.tar.gz").archive
    bad = rewrite(good, tmp_path / "bad.tar.gz", change)
    res = invoke(runner, "runs", "import", bad, "--into", tmp_path / "in")
    assert res.exit_code == 1
    line = " ".join(res.output.split())
    assert line.startswith("Error: refusing to import bad.tar.gz: ") and message in line, line
    assert "nothing was imported" in line
    assert not (tmp_path / "in").exists()  # no run, no temporary folder, and not the --into folder it made


def test_import_refuses_an_unlisted_extra_file(tmp_path):
    good = export_run(make_run(tmp_path / "gpu"), tmp_path / "good.tar.gz").archive
    extra = tarfile.TarInfo("mnist/lora/tiny-dinov2/extra.py")
    extra.size = 5
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(good) as src, tarfile.open(bad, "w:gz") as dst:
        for info in src.getmembers():
            dst.addfile(info, src.extractfile(info))
        dst.addfile(extra, io.BytesIO(b"x = 1"))
    with pytest.raises(ArtifactError, match="mnist/lora/tiny-dinov2/extra.py is not listed in SHA256SUMS"):
        import_run(bad, tmp_path / "in")
    assert not (tmp_path / "in").exists()


# ---- hostile archives ------------------------------------------------------------------------------


def _member(name: str, data: bytes = b"evil", *, kind=tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (_member("mnist/../../escaped.txt"), "a '..' component"),
        (_member("/tmp/gx-absolute-escape.txt"), "an absolute path"),
        (_member("mnist/link", kind=tarfile.SYMTYPE, link="../../outside"), "a symbolic link (to ../../outside)"),
        (_member("mnist/etc", kind=tarfile.SYMTYPE, link="/etc"), "a symbolic link (to /etc)"),
        (_member("mnist/hard", kind=tarfile.LNKTYPE, link="/etc/passwd"), "a hard link (to /etc/passwd)"),
        (_member("mnist/fifo", kind=tarfile.FIFOTYPE), "is a FIFO (a named pipe)"),
        (_member("other/run.json", b"{}"), "is outside its top folder 'mnist/'"),
    ],
    ids=["dotdot", "absolute", "symlink-relative", "symlink-absolute", "hardlink", "fifo", "second-top"],
)
def test_malicious_archives_are_refused_and_nothing_is_written(tmp_path, member, why):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in (_member("mnist/run.json", b'{"schema": 1, "steps": []}'), member):
            tar.addfile(info, io.BytesIO(data))
    into = tmp_path / "deep" / "in"
    with pytest.raises(ArtifactError) as err:
        import_run(archive, into)
    assert why in str(err.value) and "nothing was imported" in str(err.value)
    assert not (tmp_path / "deep").exists()  # nothing written, not even the folders made for the import
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep" / "escaped.txt").exists()
    assert not Path("/tmp/gx-absolute-escape.txt").exists()


def test_not_an_archive_is_one_line(runner, tmp_path):
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b" + os.urandom(200))
    res = invoke(runner, "runs", "import", tmp_path / "junk.tar.gz", "--into", tmp_path / "in")
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: refusing to import junk.tar.gz: not a readable tar archive"), res.output
    assert not (tmp_path / "in").exists()  # the --into folder it made for the import is gone again


def test_an_unwritable_into_folder_names_into(runner, tmp_path, monkeypatch):
    import errno

    run_dir = make_run(tmp_path)
    archive = tmp_path / "r.tar.gz"
    assert invoke(runner, "runs", "export", run_dir, "-o", archive).exit_code == 0
    real_mkdtemp = __import__("tempfile").mkdtemp

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr("tempfile.mkdtemp", refused)  # a read-only folder, whoever runs the test (root too)
    res = invoke(runner, "runs", "import", archive, "--into", tmp_path / "ro" / "in")
    assert res.exit_code == 1
    assert f"Error: cannot write to {tmp_path / 'ro' / 'in'} (Permission denied); make it writable or pass another --into" in res.output
    assert not (tmp_path / "ro").exists()
    monkeypatch.setattr("tempfile.mkdtemp", real_mkdtemp)


# ---- existing runs ---------------------------------------------------------------------------------


def test_existing_run_is_kept_without_force_and_replaced_with_it(runner, tmp_path):
    archive = export_run(make_run(tmp_path / "gpu"), tmp_path / "mnist.tar.zst").archive
    into = tmp_path / "runs"
    (into / "mnist").mkdir(parents=True)
    (into / "mnist" / "run.json").write_text('{"schema": 1, "steps": []}')
    (into / "mnist" / "mine.txt").write_text("local work")
    res = invoke(runner, "runs", "import", archive, "--into", into)
    assert res.exit_code == 2  # a usage error, like `runs export` onto an existing file
    assert f"Error: {into / 'mnist'} already exists; pass --force to replace it, or --into another folder (nothing was imported)" in " ".join(res.output.split())
    assert (into / "mnist" / "mine.txt").read_text() == "local work"
    assert leftovers(into) == []

    res = invoke(runner, "runs", "import", archive, "--into", into, "--force")
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"Replaced {into / 'mnist'}")
    assert not (into / "mnist" / "mine.txt").exists() and (into / "mnist" / "lora/tiny-dinov2/head.safetensors").is_file()
    assert leftovers(into) == []


def test_a_run_that_appears_while_importing_is_kept_too(runner, tmp_path, monkeypatch):
    """The check at the end (the folder appeared while the archive was unpacked) answers like the first one."""
    from gesture_cli.core.rundir import RunDir

    archive = export_run(make_run(tmp_path / "gpu"), tmp_path / "mnist.tar.zst").archive
    into = tmp_path / "runs"
    read_manifest = RunDir.read_manifest

    def read_while_another_writes(self):
        (into / "mnist").mkdir(parents=True, exist_ok=True)
        return read_manifest(self)

    monkeypatch.setattr(RunDir, "read_manifest", read_while_another_writes)
    res = invoke(runner, "runs", "import", archive, "--into", into)
    assert res.exit_code == 2
    assert f"Error: {into / 'mnist'} already exists; pass --force" in " ".join(res.output.split())
    assert list((into / "mnist").iterdir()) == [] and leftovers(into) == []


# ---- output in logs --------------------------------------------------------------------------------


def test_non_terminal_output_has_no_bar_spam(runner, tmp_path):
    """Through CliRunner (not a terminal): a few summary lines, no carriage-return redraws."""
    run_dir = make_run(tmp_path, extra_files=300)
    res = invoke(runner, "runs", "export", run_dir, "-o", tmp_path / "r.tar.gz")
    assert res.exit_code == 0 and len(res.output.splitlines()) <= 3 and "\r" not in res.output, res.output
    res = invoke(runner, "runs", "import", tmp_path / "r.tar.gz", "--into", tmp_path / "in")
    assert res.exit_code == 0 and len(res.output.splitlines()) <= 2 and "\r" not in res.output, res.output


def test_progress_helpers_print_periodic_lines_when_not_a_terminal():
    from rich.console import Console

    from gesture_cli.cli.progress import byte_progress, progress_bar

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    assert not console.is_terminal
    with progress_bar(console, "train", 20_000, unit="step") as update:
        for i in range(1, 20_001):
            update(i)
    with byte_progress(console, "download") as on_progress:
        for i in range(1, 20_001):
            on_progress(i * 1000, 20_000_000)
    lines = buf.getvalue().splitlines()
    assert lines[:1] == [lines[0]] and lines[0].startswith("train: 20000/20000 step")
    assert len(lines) <= 2, lines  # the final count (and at most one periodic line); never one per update


@pytest.mark.parametrize("terminal", [False, True])
def test_the_rate_counts_only_the_work_done_while_the_bar_was_open(terminal, monkeypatch):
    """A resumed run's bar starts at its saved step, and a bar opened late is first told of work already done:
    neither counts towards the rate (it once printed 183,430,068.9 step/s for a finished run resumed)."""
    from rich.console import Console

    from gesture_cli.cli import progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=200)
    with progress.progress_bar(console, "train", 600, unit="step", every_s=1.0) as update:
        update(549)  # the step a resumed run starts at
        for step in (550, 551):
            now[0] += 2.0
            update(step)
    text = buf.getvalue()
    assert "0.5 step/s" in text and "137" not in text and "274" not in text, text  # 2 steps in 4 s, not 551 in 4 s
    buf.seek(0)
    buf.truncate(0)
    with progress.progress_bar(console, "translate test", 1, unit="seq") as update:
        update(1)  # opened after the work: nothing was timed
    assert "1/1" in buf.getvalue() and "seq/s" not in buf.getvalue(), buf.getvalue()


def test_the_rate_is_timed_from_the_first_update(monkeypatch):
    """extract-features opens its bar, then reports each finished batch: the first batch's count is the base, so
    its time must not count either (the rate read (k-1)/k of the truth for k batches)."""
    from rich.console import Console

    from gesture_cli.cli import progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    buf = io.StringIO()
    with progress.progress_bar(Console(file=buf, force_terminal=False, width=200), "extract", 30, unit="img", every_s=0.5) as update:
        now[0] = 110.0  # the first batch of 10 took 10 s before the bar heard of it
        update(10)
        now[0] = 111.0
        update(20)
    assert "extract: 20/30 img (10.0 img/s" in buf.getvalue(), buf.getvalue()


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_force_replaces_only_a_run_never_other_files(runner, tmp_path, kind):
    """--force replaced a folder of someone's own files (no run.json) with the run: it is refused, and kept."""
    archive = export_run(make_run(tmp_path / "gpu"), tmp_path / "mnist.tar.zst").archive
    into = tmp_path / "imp"
    into.mkdir()
    if kind == "folder":
        (into / "mnist").mkdir()
        (into / "mnist" / "thesis.txt").write_text("my thesis")
    else:
        (into / "mnist").write_text("my thesis")
    res = invoke(runner, "runs", "import", archive, "--into", into, "--force")
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert f"Error: {into / 'mnist'} is a" in out and "--force replaces only a gx run" in out
    assert len(res.output.strip().splitlines()) == 1
    kept = into / "mnist" / "thesis.txt" if kind == "folder" else into / "mnist"
    assert kept.read_text() == "my thesis" and leftovers(into) == []


def test_force_replaces_an_empty_folder(runner, tmp_path):
    archive = export_run(make_run(tmp_path / "gpu"), tmp_path / "mnist.tar.zst").archive
    (tmp_path / "imp" / "mnist").mkdir(parents=True)
    res = invoke(runner, "runs", "import", archive, "--into", tmp_path / "imp", "--force")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "imp" / "mnist" / "run.json").is_file()


def test_an_archive_whose_manifest_is_no_mapping_is_refused(tmp_path):
    archive = tmp_path / "odd.tar.gz"
    body = b"[]"
    sums = f"{hashlib.sha256(body).hexdigest()}  run.json\n".encode()
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in (_member("mnist/run.json", body), _member("mnist/SHA256SUMS", sums)):
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArtifactError) as err:
        import_run(archive, tmp_path / "in")
    assert "refusing to import odd.tar.gz: mnist/run.json: corrupt manifest (it holds a list" in str(err.value)
    assert "nothing was imported" in str(err.value) and not (tmp_path / "in").exists()


def test_printed_commands_quote_paths_with_spaces(runner, tmp_path):
    """`Next: gx runs show imp/in to/L1` could not be pasted into a shell."""
    import shlex

    run_dir = make_run(tmp_path / "a b", name="L1")
    res = invoke(runner, "runs", "export", run_dir, "-o", tmp_path / "my run.tar.gz")
    assert res.exit_code == 0, res.output
    assert "On the other machine: gx runs import 'my run.tar.gz' --into runs" in res.output
    into = tmp_path / "in to"
    res = invoke(runner, "runs", "import", tmp_path / "my run.tar.gz", "--into", into)
    assert res.exit_code == 0, res.output
    hint = " ".join(res.output.split()).split("Next: ", 1)[1]
    assert shlex.split(hint) == ["gx", "runs", "show", str(into / "L1")]


def test_tilde_is_expanded_in_export_and_import_paths(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "home" / "runs")
    assert invoke(runner, "runs", "export", "~/runs/mnist", "-o", "~/out/m.tar.gz").exit_code == 0
    assert (tmp_path / "home" / "out" / "m.tar.gz").is_file()
    assert invoke(runner, "runs", "import", "~/out/m.tar.gz", "--into", "~/elsewhere").exit_code == 0
    assert (tmp_path / "home" / "elsewhere" / "mnist" / "run.json").is_file() and not (tmp_path / "~").exists()


def test_only_best_of_an_interrupted_training_warns_that_it_left_out_the_checkpoint(runner, tmp_path):
    """An interrupted run (no finished weights, only checkpoints/last/) exported 2 files, exit 0, without a word."""
    run = RunDir(tmp_path / "int")
    step = run.begin("lora-train", config={"epochs": 1}, outputs=["lora/tiny-dinov2"])
    with pytest.raises(KeyboardInterrupt), step:
        live = run.path("lora/tiny-dinov2/checkpoints/last")  # trainers write checkpoints live, kept on Ctrl-C
        live.mkdir(parents=True)
        (live / "model.safetensors").write_bytes(os.urandom(100))
        (live / "state.json").write_text('{"step": 3}\n')
        raise KeyboardInterrupt
    res = invoke(runner, "runs", "export", run.root, "--only", "best", "-o", tmp_path / "int.tar.gz")
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert ("warning: lora/tiny-dinov2 has no finished weights (its training did not finish): --only best left out "
            "lora/tiny-dinov2/checkpoints/last/, the checkpoint to --resume from; export without --only best to keep it") in out
    # a finished training: --only best leaves out last/ without a word
    res = invoke(runner, "runs", "export", make_run(tmp_path), "--only", "best", "-o", tmp_path / "done.tar.gz")
    assert res.exit_code == 0 and "warning" not in res.output


def _kill_a_training(run: RunDir, *, step: int, total: int, finished: bool) -> None:
    """A lora-train step killed after its live checkpoints/last/ reached `step` of `total` (finished or not)."""
    import json

    entry = run.begin("lora-train", config={"epochs": 2}, outputs=["lora/tiny-dinov2"])
    with pytest.raises(KeyboardInterrupt), entry:
        live = run.path("lora/tiny-dinov2/checkpoints/last")
        live.mkdir(parents=True, exist_ok=True)
        state = {"kind": "checkpoint", "schema": 1, "trainer": {"step": step, "total_steps": total, "finished": finished}}
        (live / "state.json").write_text(json.dumps(state) + "\n")
        raise KeyboardInterrupt


def test_only_best_warns_from_the_checkpoint_not_from_an_older_finished_step(runner, tmp_path):
    """Trained once, retrained with --force and killed: the old ok step still lists the output, so --only best
    dropped the only resumable state without a word. The checkpoint's own state says the training did not finish."""
    run = RunDir(make_run(tmp_path))
    _kill_a_training(run, step=3, total=12, finished=False)
    res = invoke(runner, "runs", "export", run.root, "--only", "best", "-o", tmp_path / "again.tar.gz")
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert ("warning: lora/tiny-dinov2 has no finished weights (its training did not finish; its last checkpoint is at "
            "step 3/12): --only best left out lora/tiny-dinov2/checkpoints/last/, the checkpoint to --resume from; "
            "export without --only best to keep it") in out


def test_only_best_of_a_finished_training_killed_while_scoring_does_not_say_it_did_not_finish(runner, tmp_path):
    """No finished step (killed while scoring), but the training finished: "its training did not finish" was untrue."""
    run = RunDir(tmp_path / "scoring")
    _kill_a_training(run, step=12, total=12, finished=True)
    res = invoke(runner, "runs", "export", run.root, "--only", "best", "-o", tmp_path / "s.tar.gz")
    assert res.exit_code == 0 and "warning" not in res.output, res.output
