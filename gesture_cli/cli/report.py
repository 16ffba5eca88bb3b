"""`gx report`: write one self-contained report.html for a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import gx_command, make_console

EXAMPLE = "Example: gx report -r runs/demo   (then open runs/demo/report.html)"


@gx_command
def report(
    run_dir=None,
    # path_type=str: the text as typed, so that a trailing / (a folder, made if it is not there) survives
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the page [default: RUN/report.html].", show_default=False, path_type=str)] = None,
    verbose=False,
) -> None:
    """Write RUN/report.html: every table and picture of the run, with the provenance of each step.

    One file with the pictures embedded and no scripts or network access: probe comparisons and
    confusion matrices, training curves from train_log.csv, Grad-CAM strips, PCA contact sheets,
    segmentation overlays and mIoU, keypoint drawings and PCKh, translation samples with BLEU/ROUGE,
    and for every step its command line, resolved config, input hashes, versions and times.
    """
    from gesture_cli.tasks.report import write_report

    out, n = write_report(run_dir, output)
    size = out.stat().st_size
    make_console().print(f"Wrote {out} ({n} steps, {size / 1e6:.1f} MB)")


def register(app: typer.Typer) -> None:
    app.command("report", epilog=EXAMPLE)(report)
