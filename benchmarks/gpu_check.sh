#!/usr/bin/env bash
# Prepared device check (one command) for a session that is lent a GPU.
#
#   bash benchmarks/gpu_check.sh                          # CUDA: MooER-shaped model, Qwen2-7B dimensions, bf16
#   bash benchmarks/gpu_check.sh --device cpu --quick     # smoke test of this script on a CPU machine
#
# Reports (Markdown + JSON, in $OUT when the device tool sets it, else benchmarks/gpu-out/):
#   * batch-1 greedy decode tokens/s against the memory-bandwidth bound (bandwidth / bytes of weights per step);
#   * end-to-end throughput by batch size (greedy 1..32, official beam-4 preset 1..32), encoder speed, padding;
#   * the same decode + greedy batches with --compile (static KV cache + torch.compile), last, so that a slow
#     compilation cannot cost the main numbers.
# Needs only torch + transformers (+ numpy): the bare GPU image has no soundfile/PyAV, which `import mooer` does
# not need; these sections feed in-memory waveforms. Budget: about 4-6 minutes on an H100 after the machine has started.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
QUICK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK="--quick"; shift ;;
    *) echo "usage: $0 [--device cuda|cpu] [--quick]" >&2; exit 2 ;;
  esac
done

OUT_DIR="${OUT:-benchmarks/gpu-out}"
mkdir -p "$OUT_DIR"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false

echo "== environment"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name())'

if [ "$DEVICE" = cpu ]; then
  LLM=auto                      # Qwen2-0.5B dimensions: a 7B model in fp32 does not fit a small CPU box
  SIZES=1,4
  TAG=cpu
else
  LLM=7b
  SIZES=1,2,4,8,16,32
  TAG=cuda
fi
[ -n "$QUICK" ] && SIZES=1,4

echo "== main run ($DEVICE, llm $LLM, batch sizes $SIZES)"
timeout 420 "$PY" benchmarks/bench_speed.py --device "$DEVICE" --llm "$LLM" $QUICK \
  --only encoder,decode,batches,padding --batch-sizes "$SIZES" \
  --out "$OUT_DIR/RESULTS-$TAG.md" --json "$OUT_DIR/results-$TAG.json"

echo "== compiled run (static cache + torch.compile; CUDA only, a no-op note on CPU)"
timeout 300 "$PY" benchmarks/bench_speed.py --device "$DEVICE" --llm "$LLM" --quick --compile \
  --only decode,batches --presets greedy --batch-sizes 1,16 \
  --out "$OUT_DIR/RESULTS-$TAG-compile.md" --json "$OUT_DIR/results-$TAG-compile.json" \
  || echo "compiled run failed or timed out (rc $?): the main results above stand"

echo "== wrote"
ls -l "$OUT_DIR"
