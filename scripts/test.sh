#!/usr/bin/env bash
# The test command of the README and of CI (.ci/run runs exactly this) on Debian with only a clone: sets up
# everything the tests need (scripts/setup.sh --test), runs the whole suite in .venv, then the transformers
# floor check (scripts/test_floor.sh; MOOER_TEST_FLOOR=0 skips it). Arguments go to the main pytest run.
# Exits non-zero if either run fails; both always run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test

rc=0
.venv/bin/python -m pytest -q "$@" || rc=$?
if [ "${MOOER_TEST_FLOOR:-1}" != 0 ]; then
  bash scripts/test_floor.sh || rc=$?
fi
exit "$rc"
