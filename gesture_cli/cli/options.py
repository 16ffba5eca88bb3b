"""Options shared by every command, and the error boundary that turns GxError into one line.

No torch or transformers import here or in any cli module: `gx --help` must stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.core.device import PRECISION_HELP

# path_type=str: the command gets the text as typed, so that RunDir can refuse `-r ""` (a Path makes it ".", the
# current folder) and expand a `~` the shell left alone (`--run-dir=~/x`, a quoted value)
RunDirOpt = Annotated[
    Path | None,
    typer.Option("--run-dir", "-r", help="Run directory [default: $GX_RUN_DIR, else runs/default].", show_default=False, path_type=str),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto|cpu|cuda|cuda:N|mps.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed [default: 0].", show_default=False)]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML or JSON file of options; flags given on the command line override it.", show_default=False),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Recompute even if a cached result exists.")]
PrecisionOpt = Annotated[str | None, typer.Option("--precision", help=PRECISION_HELP + ".", show_default=False)]
# --precision of the commands that run a saved artifact (evaluate, infer, gradcam): same choices as training's
# PrecisionOpt, but the default is the artifact's own (core.device.inference_precision), not plain auto.
ArtifactPrecisionOpt = Annotated[
    str | None,
    typer.Option("--precision", help="auto | fp32 | bf16 | fp16 [default: the one the artifact was made in (a probe: its features'), "
                                     "where this device runs it at speed; else auto]. The results record it.", show_default=False),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and library warnings.")]
BackboneOpt = Annotated[
    str | None,
    typer.Option("--backbone", "-b", help="Registry name (dinov3-vits16, dinov2-small, ijepa-vith14, vit-base, sapiens-0.3b, tiny-dinov2, ...), Hugging Face id, local directory, timm:NAME or a .pt TorchScript file.", show_default=False),
]


def dataset_opt(help: str):
    """The --dataset/-d option of a command. Runs record its local paths absolute: the command passes its resolved
    config through tasks.datasets.config_as_recorded, which also sees a --config file's dataset."""
    return typer.Option("--dataset", "-d", help=help, show_default=False)


DatasetOpt = Annotated[str | None, dataset_opt("Dataset spec: sign-mnist, sign-mnist:DIR, csv:FILE, folder:DIR, synthetic-hands, ...")]


def opt(name: str, help: str, *extra: str):
    """A typer.Option whose default (None) is not shown; the help text says the real default."""
    return typer.Option(name, *extra, help=help, show_default=False)


# ---- training commands: every option defaults to None ("not given") so that resolve_config lets a --config
# file or the config dataclass fill it; the help text names the dataclass default instead of Typer showing None ----

# LoRA adapters (lora-train, keypoint-train)

TargetModulesOpt = Annotated[
    str | None,
    opt("--target-modules", "Comma-separated Linear module names for LoRA [default: the family's query/value projections]."),
]
RankOpt = Annotated[int | None, opt("--rank", "LoRA rank r [default: 8].")]
AlphaOpt = Annotated[float | None, opt("--alpha", "LoRA alpha; updates scale by alpha/r [default: 16].")]
DropoutOpt = Annotated[float | None, opt("--dropout", "Dropout on the LoRA input [default: 0.1].")]

# input (lora-train, segment-train)

ImageSizeOpt = Annotated[int | None, opt("--image-size", "Input side in pixels [default: the backbone's].")]
MaxSamplesOpt = Annotated[int | None, opt("--max-samples", "Cap on images per split (seeded subset), for quick runs.")]

# the training loop (train/loop.py), every trainer

MaxStepsOpt = Annotated[int | None, opt("--max-steps", "Optimizer steps in all; overrides --epochs.")]
GradAccumOpt = Annotated[int | None, opt("--grad-accum", "Micro-batches per optimizer step [default: 1].")]
WeightDecayOpt = Annotated[float | None, opt("--weight-decay", "AdamW weight decay, not on biases/norms [default: 0.01].")]
WarmupStepsOpt = Annotated[
    int | None,
    opt("--warmup-steps", "Linear warm-up in optimizer steps [default: --warmup-ratio of all steps]."),
]
WarmupRatioOpt = Annotated[
    float | None,
    opt("--warmup-ratio", "Warm-up share of all steps when --warmup-steps is not given [default: 0.05]."),
]
EvalEveryOpt = Annotated[int | None, opt("--eval-every", "Optimizer steps between evaluations; 0 = every epoch [default: 0].")]
CheckpointEveryOpt = Annotated[
    int | None,
    opt("--checkpoint-every", "Optimizer steps between saves of checkpoints/last/ [default: 100]."),
]


# Parameters of a command with no annotation get the shared option of their name (gx_command fills it in):
# a command lists `run_dir=None, device="auto", seed=None, config=None, force=False, verbose=False` and the
# help of each comes from here, one definition for every command.
SHARED_OPTIONS = {
    "backbone": BackboneOpt,
    "run_dir": RunDirOpt,
    "device": DeviceOpt,
    "seed": SeedOpt,
    "config": ConfigOpt,
    "force": ForceOpt,
    "verbose": VerboseOpt,
    "target_modules": TargetModulesOpt,
    "rank": RankOpt,
    "alpha": AlphaOpt,
    "dropout": DropoutOpt,
    "max_steps": MaxStepsOpt,
    "grad_accum": GradAccumOpt,
    "weight_decay": WeightDecayOpt,
    "warmup_steps": WarmupStepsOpt,
    "warmup_ratio": WarmupRatioOpt,
    "eval_every": EvalEveryOpt,
    "checkpoint_every": CheckpointEveryOpt,
}


def _click_exceptions() -> tuple[type[BaseException], ...]:
    """typer.Exit/Abort and click's own exceptions, from click and from typer's vendored copy."""
    out: list[type[BaseException]] = [typer.Exit, typer.Abort]
    try:  # typer >= 0.20 vendors its own click and no longer depends on the click package
        from typer._click.exceptions import ClickException

        out.append(ClickException)
    except ImportError:
        import click

        out.append(click.ClickException)
    return tuple(out)


_PASS_THROUGH = _click_exceptions()


LOG_WIDTH = 120


def make_console(*, stderr: bool = False):
    from rich.console import Console

    # soft_wrap: plain lines (errors, "Wrote PATH") are never broken by Rich at the console width,
    # so an error stays one line and a path stays copy-pasteable in logs and CI; tables still fit.
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = LOG_WIDTH  # files, CI and nohup logs: tables get room instead of Rich's 80 columns
    return console


def precision_line(console, as_json: bool = False):
    """notify(line) for the one "precision: bf16 on cpu" line of an evaluate/infer/gradcam command: dim, like the
    other notes; with --json on stderr, because stdout is the JSON. Here, not in one command's module, so that
    evaluate, infer and the task modules they dispatch to (segment, keypoint, pose) need not import each other."""
    out = make_console(stderr=True) if as_json else console
    return lambda line: out.print(f"[dim]{line}[/]", highlight=False)


def _debug_requested(kwargs: dict) -> bool:
    if kwargs.get("verbose") or os.environ.get("GX_DEBUG", "").strip() not in {"", "0"}:
        return True
    try:
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
    ctx = get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and root.params.get("verbose"))


_NOISY_LOGGERS = ("transformers", "huggingface_hub", "accelerate", "peft", "timm", "PIL", "matplotlib")
_QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
_quieted: dict = {}  # what quiet_libraries changed in this process: {"env": [names it set]}


def quiet_libraries(verbose: bool) -> None:
    """Hide third-party warnings, log lines and progress bars (transformers, torch, PEFT, accelerate,
    huggingface_hub) unless --verbose. A verbose command in a process where an earlier command was
    quiet (tests, notebooks) gets the libraries' defaults back."""
    import logging

    if verbose:
        if _quieted:
            _unquiet()
        return
    import warnings

    _quieted.setdefault("env", [])
    for name, value in _QUIET_ENV.items():
        if name not in os.environ:
            os.environ[name] = value
            _quieted["env"].append(name)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # The environment variables above only reach libraries imported later; one already imported in this
    # process (tests, notebooks, `python -m gesture_cli` after an import) is told directly.
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _unquiet() -> None:
    import logging
    import warnings

    for name in _quieted.pop("env", []):
        os.environ.pop(name, None)
    _quieted.clear()
    for category in (UserWarning, FutureWarning, DeprecationWarning):
        warnings.filterwarnings("default", category=category)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import constants
        from huggingface_hub.utils import enable_progress_bars

        if not constants.HF_HUB_DISABLE_PROGRESS_BARS:  # read at import: when it was set then, it stays set
            enable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
        hf_logging.enable_progress_bar()


@contextlib.contextmanager
def show_gx_warnings():
    """Print each distinct GxWarning raised inside (files a dataset skipped, ...) once, as a yellow line on
    stderr, when it happens; other warnings keep their filters (quiet_libraries)."""
    import warnings

    from rich.markup import escape

    from gesture_cli.core.errors import GxWarning

    shown: set[str] = set()
    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        warnings.simplefilter("always", GxWarning)  # "default" would hide a repeat from another call site only by location
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, GxWarning):
                return original(message, category, filename, lineno, file, line)
            text = str(message)
            if text not in shown:  # the flat folder: layout scans one folder for both splits
                shown.add(text)
                make_console(stderr=True).print(f"[yellow]warning:[/] {escape(text)}", highlight=False)

        warnings.showwarning = show
        yield


def with_shared_options(fn, wrapper) -> None:
    """Give `wrapper` the signature of `fn` with each parameter that has no annotation annotated with the
    shared option of its name (SHARED_OPTIONS); Typer reads the options from this signature."""
    sig = inspect.signature(fn, eval_str=True)
    params = []
    for p in sig.parameters.values():
        if p.annotation is p.empty:
            if p.name not in SHARED_OPTIONS:
                raise TypeError(f"{fn.__name__}: parameter '{p.name}' has no annotation and is no shared option ({', '.join(SHARED_OPTIONS)})")
            p = p.replace(annotation=SHARED_OPTIONS[p.name])
        params.append(p)
    wrapper.__signature__ = sig.replace(parameters=params)


def gx_command(fn):
    """Wrap a command: GxError -> one red line on stderr and its exit code; tracebacks only when verbose.
    Parameters without an annotation are shared options (with_shared_options)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from rich.markup import escape

        from gesture_cli.core.dist import launched_rank
        from gesture_cli.core.errors import GxError, sigterm_raises_terminated, write_error

        debug = _debug_requested(kwargs)
        quiet_libraries(debug)
        try:
            with show_gx_warnings(), sigterm_raises_terminated():
                return fn(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except GxError as exc:
            rank = launched_rank()
            if rank and isinstance(exc, KeyboardInterrupt):  # a stop every process saw: rank 0 says it once
                raise typer.Exit(exc.exit_code) from None
            if debug:
                make_console(stderr=True).print_exception(show_locals=False)
            # escape: messages quote "[x, y]" and "[x, y, z]", which Rich would read as markup tags and drop
            where = f"(rank {rank}) " if rank else ""  # under a launcher, which process it was
            make_console(stderr=True).print(f"[bold red]Error:[/] {where}{escape(str(exc))}", markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            code = getattr(exc, "exit_code", 130)  # 143 after SIGTERM, 130 after Ctrl-C
            if launched_rank():  # every process got the signal: rank 0 says it once
                raise typer.Exit(code) from None
            what = "Terminated (SIGTERM)." if code == 143 else "Interrupted."
            make_console(stderr=True).print(f"[yellow]{what}[/] Finished steps are kept; unfinished outputs were removed.")
            raise typer.Exit(code) from None
        except MemoryError:
            make_console(stderr=True).print("[bold red]Error:[/] out of memory; lower --batch-size or --max-samples")
            raise typer.Exit(1) from None
        except Exception as exc:
            refused = write_error(exc) if isinstance(exc, OSError) else None
            if refused is not None:  # a full disk or a read-only folder deep in a library: still one line
                if debug:
                    make_console(stderr=True).print_exception(show_locals=False)
                make_console(stderr=True).print(f"[bold red]Error:[/] {escape(str(refused))}", markup=True, highlight=False)
                raise typer.Exit(refused.exit_code) from None
            if debug:
                make_console(stderr=True).print_exception(show_locals=False)
            else:
                first = str(exc).splitlines()[0] if str(exc) else ""
                make_console(stderr=True).print(
                    f"[bold red]Error:[/] {type(exc).__name__}: {escape(first)} (rerun with --verbose for the traceback)",
                    markup=True,
                    highlight=False,
                )
            raise typer.Exit(1) from None

    with_shared_options(fn, wrapper)
    return wrapper


def flags(**kwargs) -> dict:
    """The flags that were given (not None), for resolve_config."""
    return {k: v for k, v in kwargs.items() if v is not None}


def argv() -> list[str]:
    return ["gx", *sys.argv[1:]] if sys.argv and sys.argv[0].endswith(("gx", "__main__.py")) else list(sys.argv)


def check_task_options(command: str, task: str, **given: tuple[object, tuple[str, ...]]) -> None:
    """Refuse an option given for a task that does not read it, instead of ignoring it silently.

    given: flag -> (value, tasks that use it); a value of None (or an empty list) means not given.
    """
    from gesture_cli.core.errors import UsageError

    for flag, (value, tasks) in given.items():
        if value not in (None, [], ()) and task not in tasks:
            raise UsageError(f"{flag} applies to `gx {command} {'|'.join(tasks)}`, not to `gx {command} {task}`; leave it out")
