"""The `gx` Typer app. Each command lives in its own cli module with a `register(app)` function.

Only modules listed in COMMAND_MODULES are registered, so `gx --help` lists exactly the commands
that work. Cli modules import no torch/transformers at import time; their core calls do, lazily.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from gesture_cli import __version__

COMMAND_MODULES = [  # in the order of a workflow: data, features, classifiers, dense tasks, pose, runs
    "download",
    "extract",
    "probe",
    "lora",
    "evaluate",
    "infer",
    "gradcam",
    "pca",
    "segment",
    "keypoint",
    "pose_extract",
    "pose",
    "pose_render",
    "runs",
    "report",
    "demo",
]

app = typer.Typer(
    name="gx",
    help="gx: gesture and sign-language research with vision foundation models, from raw data to results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help text: "[default: ...]" must not be read as markup
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Example: gx demo   (every command on synthetic data; then open runs/demo/report.html)",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gx {__version__}")
        raise typer.Exit()


# Commands whose work is shared out when a launcher starts several processes; every other command runs in
# rank 0 alone (core.dist.keep_one_process), so a script may launch them all the same way.
EVERY_PROCESS = frozenset({"extract-features", "pca-compute", "lora-train", "segment-train", "keypoint-train", "pose-pretrain",
                           "pose-finetune"})


def _one_process_under_a_launcher(command: str | None) -> None:
    from gesture_cli.core.dist import keep_one_process, launched_world_size

    world = launched_world_size()
    if command is None or command in EVERY_PROCESS or world == 1:
        return
    if not keep_one_process():
        raise typer.Exit(0)
    others = "the other launched process exits" if world == 2 else f"the other {world - 1} launched processes exit"
    typer.echo(f"gx {command} runs in one process: rank 0 does it, and {others} at once", err=True)


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and library warnings for every command.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """gx: gesture and sign-language research with vision foundation models."""
    _one_process_under_a_launcher(ctx.invoked_subcommand)


for _name in COMMAND_MODULES:
    importlib.import_module(f"gesture_cli.cli.{_name}").register(app)


def main() -> None:
    app(prog_name="gx")
