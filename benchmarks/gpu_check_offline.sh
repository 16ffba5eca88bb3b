#!/usr/bin/env bash
# gx's GPU check (benchmarks/gpu_check.py) on a GPU machine whose image already has PyTorch, transformers, peft,
# accelerate and the scientific stack, but no package index (an air-gapped box, a locked-down cluster node).
# The few pure-Python or small packages gx needs beyond such an image travel as wheels in .whl/.
#
#   benchmarks/gpu_check_offline.sh fetch [PYTHON_VERSION [PACKAGE ...]]
#                          on a machine with an index: wheels into .whl/ for that Python (default 3.12), pinned as in
#                          constraints.txt: the packages below, and any named after the version (what `run` said is missing)
#   benchmarks/gpu_check_offline.sh run [gpu_check args]
#                          on the GPU machine, from the repo root: installs .whl/*.whl into /tmp/gx-site (no index, no
#                          dependencies), imports what gx needs and names what fails, then runs the check
# Environment: PYTHON (default python3) runs the check; OUT, when set, is where gpu-check.json goes.
set -euo pipefail
cd "$(dirname "$0")/.."

# What a stock PyTorch image usually lacks, for every command of the demo: BLEU/ROUGE scoring (rouge-score and
# nltk, whose defusedxml), the .pose format, and zstandard for `gx export`.
PACKAGES=(rouge-score nltk defusedxml absl-py six pose-format zstandard)
# The imports gx and the demo need at run time (modules, imported for real: a wheel installed without its
# dependencies fails here, not halfway through the check).
MODULES=(torch transformers peft accelerate safetensors huggingface_hub typer rich numpy filelock yaml sklearn pandas
         matplotlib cv2 PIL pose_format pyarrow sacrebleu rouge_score.rouge_scorer tokenizers zstandard)

pin() {  # NAME -> NAME==VERSION from constraints.txt (names compared as pip normalises them)
  local want line
  want=$(echo "$1" | tr 'A-Z_.' 'a-z--')
  line=$(grep -iE '^[A-Za-z0-9_.-]+==' constraints.txt | while IFS= read -r l; do
    n=$(echo "${l%%==*}" | tr 'A-Z_.' 'a-z--'); [ "$n" = "$want" ] && echo "$l"; done | head -1)
  echo "${line:-$1}"
}

case "${1:-}" in
  fetch)
    pyver="${2:-3.12}"
    PACKAGES+=("${@:3}")
    pip=(python3 -m pip)
    [ -x .venv/bin/python ] && pip=(.venv/bin/python -m pip)
    mkdir -p .whl
    for name in "${PACKAGES[@]}"; do
      spec=$(pin "$name")
      if ! "${pip[@]}" download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
          --platform any -d .whl "$spec" 2>/dev/null; then
        # no wheel on the index (rouge-score ships a source archive only): build a pure-Python one here
        "${pip[@]}" wheel -q --no-deps -w .whl "$spec"
      fi
    done
    ls -1 .whl
    du -sh .whl
    ;;
  run)
    shift
    py="${PYTHON:-python3}"
    if compgen -G ".whl/*.whl" >/dev/null; then
      "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gx-site .whl/*.whl
      export PYTHONPATH="/tmp/gx-site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    missing=$("$py" - "${MODULES[@]}" <<'PY'
import importlib
import sys

failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # the module itself, or one it imports
        failed.append(exc.name or name)
print(" ".join(dict.fromkeys(failed)))
PY
)
    if [ -n "$missing" ]; then
      echo "gx needs these modules, missing here: $missing (fetch their packages into .whl/ on a machine with an index:" \
           "benchmarks/gpu_check_offline.sh fetch VERSION PACKAGE ...)" >&2
      exit 2
    fi
    nvidia-smi -L 2>/dev/null || true
    exec "$py" benchmarks/gpu_check.py --out "${OUT:-.}/gpu-check.json" "$@"
    ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
