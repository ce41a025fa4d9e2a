#!/usr/bin/env bash
# The GPU paths in one go, in about 8 minutes on one GPU: the GPU tests, a short default-recipe run on CUDA with
# vLLM colocated (sleep mode on), rlvr's vLLM engine against raw vLLM on the same requests, the learner's tokens/s
# and MFU against the plain full-logits way, and peak GPU memory per phase.
#
#   bash bench/gpu_check.sh [PYTHON]     # PYTHON: an interpreter with rlvr, torch (CUDA) and vllm installed
#
# Every section prints its own header and keeps going when an earlier one fails; the exit code is the number of
# sections that failed.
set -u
PYTHON=${1:-python}
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
failed=0

section() {
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name (limit ${limit}s) ==="
    local started=$SECONDS
    if timeout "$limit" "$@"; then
        echo "--- $name: ok in $((SECONDS - started))s"
    else
        echo "--- $name: FAILED (exit $?) after $((SECONDS - started))s"
        failed=$((failed + 1))
    fi
}

"$PYTHON" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s):",
      ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "none")
try:
    import vllm
    print(f"vllm {vllm.__version__}")
except ImportError:
    print("vllm not installed: the colocated run and the rollout bench will fail")
PY

section "GPU tests" 150 "$PYTHON" -m pytest -m gpu -q -rs tests/test_gpu.py
section "default recipe on CUDA, vLLM colocated" 180 "$PYTHON" -m rlvr.cli train default --overwrite \
    --set name=gpu-check --set output_dir="$OUT" --set train.device=cuda --set rollout.engine=vllm \
    --set train.steps=5 --set env.eval_size=50
if [ -f "$OUT/gpu-check/metrics.jsonl" ]; then
    "$PYTHON" - "$OUT/gpu-check/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for row in rows:
    memory = ", ".join(f"{k.removeprefix('memory/')} {v:.2f}" for k, v in row.items() if k.startswith("memory/"))
    print(f"step {row['step']}: {row['step_seconds']:.2f} s, reward {row['reward']:.3f}, GB per phase: {memory}")
PY
fi
section "rollout: rlvr's vLLM engine vs raw vLLM" 120 "$PYTHON" bench/rollout.py --skip-transformers
section "learner: tokens/s and MFU vs plain full logits" 90 "$PYTHON" bench/learner.py --device cuda --peak-tflops "${PEAK_TFLOPS:-989}"
echo
echo "sections failed: $failed"
exit "$failed"
