#!/usr/bin/env bash
# Sets this clone up on Debian: the system packages it needs and .venv (torch, then the project editable
# with every extra). With --test, also what the test suite needs: espeak-ng, flite and sox (synthetic
# speech), gettext's msgfmt (the recipe's corpus), chromium + node/npm and the browser driver in
# tests/web (the web page test). Rerunning installs only what is missing; apt-get runs through sudo when
# not root.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
case "${1-}" in
  --test) tests=1 ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--test]" >&2; exit 2 ;;
esac

# Debian packages, each looked for by a command it provides (command:package).
need=()
if ! command -v python3 >/dev/null 2>&1; then
  need+=(python3 python3-venv)
elif ! python3 -c "import ensurepip" 2>/dev/null; then
  need+=(python3-venv)  # Debian's python3 lacks ensurepip, so `python3 -m venv` fails without it
fi
if [ "$tests" = 1 ]; then
  for pair in espeak-ng:espeak-ng flite:flite sox:sox msgfmt:gettext chromium:chromium node:nodejs npm:npm; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
  done
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "setup: installing Debian packages: ${need[*]}" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# torch first and pinned (the release the project is tested with), so that the project's own install
# below finds it already satisfied instead of choosing a build itself.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[all]"

if [ "$tests" = 1 ]; then
  # FunASR's own SANMEncoder, which tests/test_funasr_encoder.py compares mooer's encoder with (the version
  # the golden fixtures were cross-checked with). --no-deps: the module imports on its own, and FunASR's
  # dependencies (modelscope, numba, ...) would add ~35 packages for nothing.
  .venv/bin/pip install -q --no-deps funasr==1.4.16
  # playwright-core, which drives Debian's chromium (kept out of git: tests/web/node_modules)
  (cd tests/web && npm ci --silent --no-audit --no-fund)
fi
