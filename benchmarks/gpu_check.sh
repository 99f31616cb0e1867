#!/usr/bin/env bash
# Prepared device check (one command) for a session that is lent a GPU.
#
#   bash benchmarks/gpu_check.sh                          # CUDA: MooER-shaped model, Qwen2-7B dimensions, bf16
#   bash benchmarks/gpu_check.sh --device cpu --quick     # smoke test of this script on a CPU machine
#   bash benchmarks/gpu_check.sh --with-compile           # also the --compile run (adds up to 5 minutes)
#
# Reports (Markdown + JSON, in $OUT when the device tool sets it, else benchmarks/gpu-out/):
#   1. engines (benchmarks/bench_vllm.py): `hf` against `vllm` on the same random model, greedy: a 256-utterance
#      job (2-8 s each; hf in batches of 32, vllm the whole job) and batch 1 (end to end, and the decode step
#      against the memory-bandwidth bound), tokens/s, utterances/s, RTF. vLLM is an optional extra
#      (`pip install 'mooer[vllm]'`): where it does not import, this says so (VLLM_STATUS line) and measures
#      hf alone. The device tool's H200 image has no vLLM, and its CUDA wheel is far over the 64 MiB a call
#      can carry, so there it is hf alone unless the image gains vLLM.
#   2. hf in depth (benchmarks/bench_speed.py): batch-1 greedy decode tokens/s against the bandwidth bound,
#      end-to-end throughput by batch size (greedy and the official beam-4 preset), encoder speed.
#   3. only with --with-compile: decode + greedy batches with --compile (static KV cache + torch.compile).
# Needs only torch + transformers (+ numpy; vllm for the vllm rows): the bare GPU image has no soundfile/PyAV,
# which `import mooer` does not need; these sections feed in-memory waveforms. Budget: at most 8 minutes after
# the machine has started (each part has its own timeout; a part that runs out leaves the others' results).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
QUICK=""
COMPILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK="--quick"; shift ;;
    --with-compile) COMPILE=1; shift ;;
    *) echo "usage: $0 [--device cuda|cpu] [--quick] [--with-compile]" >&2; exit 2 ;;
  esac
done

OUT_DIR="${OUT:-benchmarks/gpu-out}"
mkdir -p "$OUT_DIR"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
export MOOER_CACHE="${MOOER_CACHE:-/tmp/mooer-cache-gpu-check}"  # the merged LLM vLLM loads (15 GB for 7B)

echo "== environment"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name())'

if [ "$DEVICE" = cpu ]; then
  LLM=auto                      # Qwen2-0.5B dimensions: a 7B model in fp32 does not fit a small CPU box
  SIZES=1,4
  TAG=cpu
  JOB=(--n 16 --hf-batch 8)
  T1=900; T2=600                # a smoke test on a (shared, slow) CPU: time limits that do not cut it
else
  LLM=7b
  SIZES=1,4,16,32
  TAG=cuda
  JOB=(--n 256 --hf-batch 32)
  T1=330; T2=150                # the 8-minute device budget
fi
if [ -n "$QUICK" ]; then SIZES=1,4; JOB=(--n 8 --hf-batch 4); fi

echo "== vLLM"
if VLLM_MSG=$("$PY" -c 'import vllm; print(vllm.__version__)' 2>&1); then
  echo "VLLM_STATUS: available, version $(echo "$VLLM_MSG" | tail -1)"
else
  echo "VLLM_STATUS: NOT AVAILABLE on this machine ($(echo "$VLLM_MSG" | tail -1)); the engine comparison measures hf only." \
       "Install the extra (pip install 'mooer[vllm]') where the image allows it to get the vllm rows."
fi

echo "== 1. engines: hf vs vllm ($DEVICE, llm $LLM, ${JOB[*]}, batch 1)"
timeout "$T1" "$PY" benchmarks/bench_vllm.py --device "$DEVICE" --llm "$LLM" "${JOB[@]}" --repeats 2 --batch1 4 \
  --skip serve --out "$OUT_DIR/RESULTS-vllm-$TAG.md" --json "$OUT_DIR/results-vllm-$TAG.json" \
  || echo "engine comparison failed or timed out (rc $?): what it finished is in results-vllm-$TAG.json"

echo "== 2. hf in depth ($DEVICE, llm $LLM, batch sizes $SIZES)"
timeout "$T2" "$PY" benchmarks/bench_speed.py --device "$DEVICE" --llm "$LLM" --quick \
  --only encoder,decode,batches --batch-sizes "$SIZES" \
  --out "$OUT_DIR/RESULTS-$TAG.md" --json "$OUT_DIR/results-$TAG.json" \
  || echo "hf in-depth run failed or timed out (rc $?)"

if [ -n "$COMPILE" ]; then
  echo "== 3. compiled run (static cache + torch.compile; CUDA only, a no-op note on CPU)"
  timeout 300 "$PY" benchmarks/bench_speed.py --device "$DEVICE" --llm "$LLM" --quick --compile \
    --only decode,batches --presets greedy --batch-sizes 1,16 \
    --out "$OUT_DIR/RESULTS-$TAG-compile.md" --json "$OUT_DIR/results-$TAG-compile.json" \
    || echo "compiled run failed or timed out (rc $?): the main results above stand"
fi

echo "== wrote"
ls -l "$OUT_DIR"
