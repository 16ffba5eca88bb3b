"""One call on a CUDA machine: every gx command in bf16 and fp16 on tiny models, plus the LoRA and extraction
benchmarks, summarised in one JSON file (what `make gpu-check` runs; about 5-8 minutes on one GPU).

For each precision the demo's command lines (`gesture_cli.tasks.demo.demo_steps`: extract, probe, fine-tune,
evaluate, infer, Grad-CAM, PCA compute and render, segmentation, keypoints, pose pretrain/finetune,
translate, report) run in a run dir of their own with `--device cuda --precision P` added to every command
that runs a model. Each step's exit code and time are recorded, and the precision every trained artifact
says it was made in is checked against the one asked for. A GPU without bf16 (T4, V100) runs fp16 only.

Usage: python benchmarks/gpu_check.py [--out gpu-check.json] [--skip-benchmarks]
Exit code: 0 when every step ran and every benchmark finished, 1 otherwise, 2 without CUDA.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Commands that run a model, and so take --device and --precision.
MODEL_COMMANDS = {"extract-features", "lora-train", "evaluate", "infer", "gradcam", "pca-compute", "pca-visualize", "segment-train",
                  "keypoint-train", "pose-pretrain", "pose-finetune"}
TRAINED = {"lora": "lora/tiny-dinov2/metrics.json", "segment": "segment/tiny-dinov2/metrics.json",
           "keypoint": "keypoint/tiny-dinov2/metrics.json", "pose-pretrain": "pose/pretrain/metrics.json",
           "pose-finetune": "pose/finetune/metrics.json"}


def run_commands(precision: str, root: Path) -> dict:
    from gesture_cli.cli.demo import invoke_gx
    from gesture_cli.tasks.demo import demo_steps, prepare_inputs, run_step

    run = root / precision
    run.mkdir(parents=True)
    prepare_inputs(run)
    steps, t0 = [], time.perf_counter()
    for step in demo_steps(run):
        extra = ("--device", "cuda", "--precision", precision) if step.args[0] in MODEL_COMMANDS else ()
        step = type(step)(step.title, (*step.args, *extra), step.forceable)
        res = run_step(step, run, fresh=False, invoke=invoke_gx)
        steps.append({"title": step.title, "command": "gx " + " ".join(step.args), "status": res.status, "exit_code": res.exit_code,
                      "seconds": round(res.seconds, 2)})
        if res.status == "failed":
            break
    recorded = {}
    for name, rel in TRAINED.items():
        path = run / rel
        recorded[name] = json.loads(path.read_text()).get("precision") if path.is_file() else None
    ok = all(s["status"] != "failed" for s in steps) and len(steps) == len(demo_steps(run))
    ok = ok and all(v == precision for v in recorded.values())
    return {"ok": ok, "seconds": round(time.perf_counter() - t0, 1), "steps": steps, "recorded_precision": recorded}


def run_benchmark(args: list[str], json_path: Path) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, *args, "--json", str(json_path)], capture_output=True, text=True, cwd=REPO)
    out = {"command": " ".join(args), "exit_code": res.returncode, "seconds": round(time.perf_counter() - t0, 1),
           "output": res.stdout[-2000:] + res.stderr[-1000:]}
    if json_path.is_file():
        out["result"] = json.loads(json_path.read_text())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the JSON summary to write")
    ap.add_argument("--skip-benchmarks", action="store_true", help="run the commands only")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU: torch.cuda.is_available() is False here", file=sys.stderr)
        return 2
    precisions = ["bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    summary: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
                     "precisions": {}, "benchmarks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for p in precisions:
            print(f"== commands in {p}", flush=True)
            summary["precisions"][p] = res = run_commands(p, root)
            print(f"   {'ok' if res['ok'] else 'FAILED'} in {res['seconds']} s", flush=True)
        if not args.skip_benchmarks:
            benches = {f"lora-{p}": ["benchmarks/lora.py", "--device", "cuda", "--precision", p, "--batch", "32"] for p in precisions}
            benches["extract"] = ["benchmarks/extract.py", "--device", "cuda", "--no-compile"]
            for name, cmd in benches.items():
                print(f"== benchmark {name}", flush=True)
                summary["benchmarks"][name] = run_benchmark(cmd, root / f"{name}.json")
    summary["ok"] = all(r["ok"] for r in summary["precisions"].values()) and all(
        b["exit_code"] == 0 for b in summary["benchmarks"].values())
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out}: {'ok' if summary['ok'] else 'FAILED'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
