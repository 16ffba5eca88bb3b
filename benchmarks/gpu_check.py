"""One call on a CUDA machine: every gx command in bf16 and fp16 on tiny models, plus the LoRA and extraction
benchmarks, summarised in one JSON file (what `make gpu-check` runs; about 5-8 minutes on one GPU).

For each precision the demo's command lines (`gesture_cli.tasks.demo.demo_steps`: extract, probe, fine-tune,
evaluate, infer, Grad-CAM, PCA compute and render, segmentation, keypoints, pose pretrain/finetune,
translate, report) run in a run dir of their own with `--device D --precision P` added to every command
that runs a model, and `--verbose`, so a failure leaves its traceback in the log. Each step's exit code,
time and (when it fails) the end of its output are recorded, and the precision every trained artifact says
it was made in is checked against the one asked for. A step that fails does not stop the others: those
that need its artifacts fail too, quickly, and the independent ones still run. A GPU without bf16 (T4,
V100) runs fp16 only.

The summary is rewritten after every step and benchmark, so a run cut short still leaves what it measured;
Ctrl-C (or SIGTERM) stops the whole check, not just the step it was in.

`--device cpu` rehearses the same script on a CPU (bf16 only: fp16 on a CPU is a usage error), with
`--quick` benchmark settings: it checks the script, not the numbers.

Usage: python benchmarks/gpu_check.py [--out gpu-check.json] [--device cuda|cpu] [--precisions bf16,fp16]
                                      [--skip-benchmarks] [--quick]
Exit code: 0 when every step ran and every benchmark finished, 1 otherwise, 2 without CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # gx need not be installed: a GPU image with PyTorch and no package index runs it from the checkout
    sys.path.insert(0, str(REPO))
# Commands that run a model, and so take --device and --precision.
MODEL_COMMANDS = {"extract-features", "lora-train", "evaluate", "infer", "gradcam", "pca-compute", "pca-visualize", "segment-train",
                  "keypoint-train", "pose-pretrain", "pose-finetune"}
BENCH_TIMEOUT_S = 300  # one benchmark that hangs must not eat the rest of a short GPU lease


def trained_metrics(backbone: str) -> dict[str, str]:
    """Name -> metrics.json (relative to the run dir) of each artifact the demo trains."""
    return {"lora": f"lora/{backbone}/metrics.json", "segment": f"segment/{backbone}/metrics.json",
            "keypoint": f"keypoint/{backbone}/metrics.json", "pose-pretrain": "pose/pretrain/metrics.json",
            "pose-finetune": "pose/finetune/metrics.json"}


class _Tee(io.TextIOBase):
    """Writes to the real stream at once (live progress) and keeps a copy (the tail goes into the summary)."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.stream.flush()
        return self.copy.write(text)


STOPPED = (130, 143)  # gx's exit codes after Ctrl-C and SIGTERM: the check stops, it does not go on to the next step


def invoke_captured(args: list[str]) -> tuple[int, str]:
    """Run one gx command line in this process with --verbose; returns (exit code, its output), shown live as well."""
    from gesture_cli.cli.demo import invoke_gx

    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
        try:
            code = invoke_gx(["--verbose", *args])
        except Exception:  # noqa: BLE001 - a crash is a result to record; Ctrl-C and SIGTERM still stop the check
            import traceback

            traceback.print_exc()
            code = 1
    return code, tee.copy.getvalue()


def run_commands(precision: str, root: Path, *, device: str, on_step: Callable[[dict], None] | None = None) -> dict:
    from gesture_cli.tasks.demo import MAIN, demo_steps, prepare_inputs, run_step

    run = root / precision
    run.mkdir(parents=True)
    prepare_inputs(run)
    steps, t0 = [], time.perf_counter()
    result = {"ok": False, "seconds": 0.0, "steps": steps, "recorded_precision": {}}
    for step in demo_steps(run):
        extra = ("--device", device, "--precision", precision) if step.args[0] in MODEL_COMMANDS else ()
        step = type(step)(step.title, (*step.args, *extra), step.forceable)
        outputs: list[str] = []

        def invoke(args: list[str], outputs: list[str] = outputs) -> int:
            code, out = invoke_captured(args)
            outputs.append(out)
            return code

        res = run_step(step, run, fresh=False, invoke=invoke)
        entry = {"title": step.title, "command": "gx " + " ".join(step.args), "status": res.status, "exit_code": res.exit_code,
                 "seconds": round(res.seconds, 2)}
        if res.status == "failed":
            entry["output_tail"] = "".join(outputs)[-3000:]
        steps.append(entry)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"   [{res.status:>6} {res.seconds:6.1f} s] {step.title}", flush=True)
        if on_step is not None:
            on_step(result)  # the summary on disk after every step: a run cut short keeps what it did
        if res.exit_code in STOPPED:
            raise KeyboardInterrupt(f"stopped during '{step.title}'")
    for name, rel in trained_metrics(MAIN).items():
        path = run / rel
        result["recorded_precision"][name] = json.loads(path.read_text()).get("precision") if path.is_file() else None
    result["ok"] = all(s["status"] != "failed" for s in steps) and all(v == precision for v in result["recorded_precision"].values())
    return result


def run_benchmark(args: list[str], json_path: Path) -> dict:
    """One benchmark script in its own process group, so that a timeout ends its children (lora.py's routes) too."""
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    proc = subprocess.Popen([sys.executable, *args, "--json", str(json_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=BENCH_TIMEOUT_S)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
        code, stderr = 124, f"timed out after {BENCH_TIMEOUT_S} s"
    except BaseException:  # Ctrl-C or SIGTERM of the check: its benchmark goes too
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    out = {"command": " ".join(args), "exit_code": code, "seconds": round(time.perf_counter() - t0, 1),
           "output": stdout[-2000:] + stderr[-1000:]}
    print(stdout[-2000:] + stderr[-1000:], flush=True)
    if code == 0 and json_path.is_file():
        out["result"] = json.loads(json_path.read_text())
    return out


def benchmark_commands(precisions: list[str], *, device: str, quick: bool) -> dict[str, list[str]]:
    lora = ["--batch", "2", "--size", "64", "--steps", "2"] if quick else ["--batch", "32"]
    extract = ["--images", "4", "--naive-images", "1", "--rounds", "1", "--seconds", "0.2"] if quick else []
    benches = {f"lora-{p}": ["benchmarks/lora.py", "--device", device, "--precision", p, *lora] for p in precisions}
    benches["extract"] = ["benchmarks/extract.py", "--device", device, "--no-compile", *extract]
    return benches


def environment() -> dict:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("transformers", "peft", "accelerate", "huggingface_hub", "numpy"):
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    with contextlib.suppress(Exception):
        versions["gx_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                                               check=True).stdout.strip()
    return versions


def write_summary(path: Path, summary: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(path)


def run_all(args, precisions: list[str], summary: dict) -> None:
    """The commands in each precision, then the benchmarks; the summary on disk after every step."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for p in precisions:
            print(f"== commands in {p}", flush=True)

            def save_partial(partial: dict, p: str = p) -> None:
                summary["precisions"][p] = partial
                write_summary(args.out, summary)

            res = run_commands(p, root, device=args.device, on_step=save_partial)
            save_partial(res)
            print(f"   {'ok' if res['ok'] else 'FAILED'} in {res['seconds']} s; recorded precision {res['recorded_precision']}", flush=True)
        if not args.skip_benchmarks:
            for name, cmd in benchmark_commands(precisions, device=args.device, quick=args.quick).items():
                print(f"== benchmark {name}: {' '.join(cmd)}", flush=True)
                summary["benchmarks"][name] = run_benchmark(cmd, root / f"{name}.json")
                write_summary(args.out, summary)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the JSON summary to write")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a rehearsal of this script (bf16 only)")
    ap.add_argument("--precisions", help="comma-separated, e.g. fp16 (default: bf16,fp16 on CUDA with bf16, fp16 on older CUDA, "
                                         "bf16 on a CPU)")
    ap.add_argument("--skip-benchmarks", action="store_true", help="run the commands only")
    ap.add_argument("--quick", action="store_true", help="tiny benchmark settings (checks the script, not the numbers)")
    args = ap.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU: torch.cuda.is_available() is False here (--device cpu rehearses it)", file=sys.stderr)
        return 2
    if args.precisions:
        precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    elif args.device == "cpu":
        precisions = ["bf16"]
    else:
        precisions = ["bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    allowed = {"fp32", "bf16"} | ({"fp16"} if args.device == "cuda" else set())
    if bad := [p for p in precisions if p not in allowed]:
        ap.error(f"--precisions: {', '.join(bad)} not one of {', '.join(sorted(allowed))} on {args.device}")
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else f"none (CPU rehearsal: {platform.processor() or platform.machine()})"
    summary: dict = {"gpu": gpu, "device": args.device, "versions": environment(), "precisions": {}, "benchmarks": {}, "ok": False}
    print(f"gpu-check on {gpu}: {', '.join(precisions)}; {summary['versions']}", flush=True)
    write_summary(args.out, summary)
    try:
        run_all(args, precisions, summary)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM turned into an exit code by gx: what ran is in the summary
        summary["stopped"] = str(exc) or "interrupted"
        write_summary(args.out, summary)
        print(f"stopped ({summary['stopped']}); wrote {args.out}", file=sys.stderr)
        return 130
    summary["ok"] = all(r["ok"] for r in summary["precisions"].values()) and all(
        b["exit_code"] == 0 for b in summary["benchmarks"].values())
    write_summary(args.out, summary)
    print(f"wrote {args.out}: {'ok' if summary['ok'] else 'FAILED'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
