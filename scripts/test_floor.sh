#!/usr/bin/env bash
# The transformers floor check: the oldest transformers that pyproject.toml allows ("transformers>=X.Y",
# installed as X.Y.*) in its own .venv-floor, on the golden fixture tests only (the official-layout
# checkpoint's tensors and exact ids, checkpoint loading, the speed options' exactness, the bundled model saved by transformers 5). Keeps the declared
# floor honest without a second full suite. Run by scripts/test.sh after the main suite.
set -euo pipefail
cd "$(dirname "$0")/.."

floor=$(sed -n 's/^ *"transformers>=\([0-9][0-9.]*\)".*/\1/p' pyproject.toml)
if [ -z "$floor" ]; then
  echo "test_floor: no \"transformers>=X.Y\" dependency in pyproject.toml" >&2
  exit 1
fi
[ -x .venv-floor/bin/python ] || python3 -m venv .venv-floor
.venv-floor/bin/pip install -q torch==2.13.0
# pip picks peft/tokenizers/... releases compatible with the pinned transformers
.venv-floor/bin/pip install -q -e . "transformers==$floor.*" "pytest>=7"
echo "test_floor: transformers $(.venv-floor/bin/python -c 'import transformers; print(transformers.__version__)')"
exec .venv-floor/bin/python -m pytest -q tests/test_model_fixtures.py tests/test_checkpoint.py tests/test_speed.py \
  tests/test_default_model.py
