"""`gx report`: gather what a run directory holds and write RUN/report.html.

This module knows the run dir: which steps' results are in place (`current_steps`), which files each
wrote (`step_files`) and which pose samples a step's viewer plays (`pose_viewer_html`, read from the
dataset the step recorded). `gesture_cli.viz.report` draws the page from what is gathered here.
"""

from __future__ import annotations

import csv
from pathlib import Path

from gesture_cli.core.artifacts import atomic_write_text
from gesture_cli.core.errors import GxError, UsageError, shell_word
from gesture_cli.core.output_paths import check_not_input, html_output
from gesture_cli.core.rundir import RunDir
from gesture_cli.viz.report import ReportPage, StepView, render_report

REPORT_SAMPLES = 4  # samples per pose viewer in a report


def current_steps(run: RunDir) -> list[dict]:
    """The steps whose results are in place: for each output, the newest finished step whose files are
    on disk now (`RunDir.holds_output`: two writers of one output are told apart by what each
    committed, not by the order they started); plus failures."""
    steps = run.read_manifest().get("steps", [])
    writer: dict[str, int] = {}  # output -> index of the step whose files are there
    memo: dict[str, dict] = {}
    for i in range(len(steps) - 1, -1, -1):
        s = steps[i]
        if s.get("status") == "ok":
            for o in s.get("outputs", []):
                if o not in writer and run.holds_output(s, o, steps, memo=memo):
                    writer[o] = i
    keep = []
    for i, s in enumerate(steps):
        if s.get("status") == "ok":
            if any(writer.get(o) == i for o in s.get("outputs", [])) or not s.get("outputs"):
                keep.append(s)
        elif s.get("status") in ("failed", "interrupted") and i == max(
            (j for j, t in enumerate(steps) if t.get("command") == s.get("command")), default=i
        ):
            keep.append(s)  # only a command's newest failure is worth showing
    return keep


def step_files(run: RunDir, entry: dict, others: tuple[str, ...] = ()) -> list[Path]:
    """The files a step wrote, minus checkpoints, hidden files and what another step's output nested in it holds
    (pca/<backbone>/renders/ of pca-visualize inside pca/<backbone>/ of pca-compute is shown once, with its writer)."""
    files: list[Path] = []
    for o in entry.get("outputs", []):
        p = run.root / o
        nested = [run.root / x for x in others if x.startswith(o.rstrip("/") + "/")]
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file() and "checkpoints" not in q.relative_to(p).parts
                                and not any(part.startswith(".") for part in q.relative_to(p).parts)
                                and not any(q == n or n in q.parents for n in nested)))
    return files


def pose_viewer_html(root: Path, entry: dict) -> str:
    """The player for a report step: the validation samples a pose-pretrain/-finetune step trained on, or
    the first translated samples of an `evaluate translate` step with their hypotheses; '' for other steps."""
    from gesture_cli.viz.pose_view import report_viewer, report_viewer_failure

    cfg = entry.get("config") or {}
    command, spec = entry.get("command"), cfg.get("dataset")
    translate = command == "evaluate" and cfg.get("task") == "translate"
    if entry.get("status") != "ok" or not spec or (command not in ("pose-pretrain", "pose-finetune") and not translate):
        return ""
    from gesture_cli.data.pose import make_pose_dataset
    from gesture_cli.data.registry import parse_dataset

    texts: dict[str, dict[str, str]] = {}
    try:
        spec = parse_dataset(spec, list(cfg.get("dataset_opts") or []), kind="pose")  # read once for every make below
        if translate:
            preds = root / "eval" / "predictions.csv"
            rows = list(csv.DictReader(open(preds, newline="", encoding="utf-8")))[:REPORT_SAMPLES] if preds.is_file() else []
            texts = {r["id"]: {"hypothesis": r.get("hypothesis", ""), "BLEU-4": r.get("bleu4", "")} for r in rows}
            ds = make_pose_dataset(spec, split=cfg.get("split") or "test", seed=int(cfg.get("seed") or 0))
            samples = [s for s in ds.samples if s.id in texts]
            title = f"translated samples of {spec} / {cfg.get('split') or 'test'}"
        else:
            ds = make_pose_dataset(spec, split="val", seed=int(cfg.get("seed") or 0))
            if not len(ds):
                ds = make_pose_dataset(spec, seed=int(cfg.get("seed") or 0))
            samples = ds.samples[:REPORT_SAMPLES]
            title = f"{spec}: {len(samples)} sample(s) of {ds.split or 'all'}"
        if not samples:
            return ""
        from gesture_cli.data.pose_extract import read_pose_confidence

        confidences = {s.id: c for s in samples if (c := read_pose_confidence(s)) is not None}
        return report_viewer(samples, title=title, confidences=confidences, texts=texts)
    except Exception as exc:  # a dataset moved or deleted since the run: the report still renders, and says why
        return report_viewer_failure(spec, exc)


def make_report_page(run: RunDir) -> ReportPage:
    """What the report shows: every step whose results are in place, with its files and pose viewer."""
    manifest = run.read_manifest()
    steps = current_steps(run)
    all_outputs = tuple(o for s in steps if s.get("status") == "ok" for o in s.get("outputs", []))
    views = [StepView(entry=s, files=step_files(run, s, all_outputs) if s.get("status") == "ok" else [],
                      viewer=pose_viewer_html(run.root, s)) for s in steps]
    return ReportPage(name=run.name, location=str(run.root.resolve()), root=run.root, created=str(manifest.get("created", "?")),
                      steps=views)


def build_report(run: RunDir) -> str:
    """The report page of a run, as HTML."""
    return render_report(make_report_page(run))


def write_report(run_dir: Path | None, output: Path | str | None = None) -> tuple[Path, int]:
    """Write the report (atomically) and return its path and the number of steps shown."""
    run = RunDir(run_dir)
    if not run.manifest_path.is_file():
        raise UsageError(f"{run.root}: not a run directory (no run.json); run a gx command with -r {shell_word(run.root)} first")
    try:
        run.recover_dead_steps()  # a killed step is shown as interrupted, not as running forever
    except (OSError, GxError):
        pass  # a run dir this user cannot write is still reported (with -o elsewhere), as it is
    out = html_output(run.root / "report.html" if output is None else output, default_name="report.html", option="-o")
    page = make_report_page(run)
    # never onto a file a step wrote (the page shows them): the run would lose that step's result. Only the
    # steps' .html/.htm files are looked at on disk (check_not_input), so a run of many files costs nothing.
    check_not_input(out, [f for view in page.steps for f in view.files])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_report(page))
    return out, len(page.steps)
