#!/usr/bin/env bash
# The test command of the README and of CI (.ci/run runs exactly this) on Debian with only a clone: sets up
# everything the tests need (scripts/setup.sh --test), runs the whole suite in .venv, then the transformers
# floor check (scripts/test_floor.sh; MOOER_TEST_FLOOR=0 skips it) and the vLLM engine's tests in their own
# venv (scripts/test_vllm.sh; MOOER_TEST_VLLM=0 skips it). Arguments go to the main pytest run.
# Exits non-zero if any run fails; all always run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test

rc=0
# the vLLM tests need .venv-vllm (scripts/test_vllm.sh), not this one
.venv/bin/python -m pytest -q --ignore-glob='tests/test_vllm*' "$@" || rc=$?
if [ "${MOOER_TEST_FLOOR:-1}" != 0 ]; then
  bash scripts/test_floor.sh || rc=$?
fi
if [ "${MOOER_TEST_VLLM:-1}" != 0 ]; then
  bash scripts/test_vllm.sh || rc=$?
fi
exit "$rc"
