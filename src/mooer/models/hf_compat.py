"""Every transformers-version-specific name mooer uses, in one place.

mooer supports transformers >= 4.56 (the first release with ``DynamicCache(config=...)``, ``dtype=`` in
``from_pretrained`` and ``set_attn_implementation``; CI runs the golden tests on 4.56 and on the latest).
Between 4.56 and 5.x the KV-cache keyword of a decoder's ``forward`` and of ``generate`` was renamed from
``past_key_values`` to ``cache``; :func:`cache_kwarg` reads which one this installation uses.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import transformers
from transformers import DynamicCache

MIN_TRANSFORMERS = "4.56"


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


if _version_tuple(transformers.__version__) < _version_tuple(MIN_TRANSFORMERS):  # pragma: no cover
    raise ImportError(f"mooer needs transformers >= {MIN_TRANSFORMERS}; this is {transformers.__version__}")


@lru_cache(maxsize=None)
def _cache_kwarg_of(forward) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_kwarg(decoder) -> str:
    """Name of the KV-cache argument of ``decoder.forward`` (and of ``generate``): ``cache`` in recent
    transformers 5 releases, ``past_key_values`` before."""
    return _cache_kwarg_of(type(decoder).forward)


def new_cache(config) -> DynamicCache:
    """An empty dynamic KV cache for a model with this config."""
    return DynamicCache(config=config)
