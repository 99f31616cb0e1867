"""Every transformers-version-specific name mooer uses, in one place.

mooer supports transformers >= 4.56 (the first release with ``DynamicCache(config=...)``, ``dtype=`` in
``from_pretrained`` and ``set_attn_implementation``; CI runs the golden tests on 4.56 and on the latest).
Models saved by transformers 5 are written so that 4.56 reads them too (:func:`make_portable`). Between 4.56
and 5.x the KV-cache keyword of a decoder's ``forward`` and of ``generate`` was renamed from
``past_key_values`` to ``cache``; :func:`cache_kwarg` reads which one this installation uses.
"""

from __future__ import annotations

import inspect
import json
from functools import lru_cache
from pathlib import Path

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


def make_portable(llm_dir: str | Path) -> None:
    """Rewrite what transformers 5 saved in ``llm_dir`` so that transformers 4.56 reads it the same way.

    transformers 5 writes the RoPE base only inside ``rope_parameters`` (4.56 would silently fall back to
    10,000 instead of the model's 1,000,000) and the tokenizer's extra special tokens as a list under
    ``extra_special_tokens`` (4.56 expects a dict there and fails). The legacy keys ``rope_theta`` and
    ``additional_special_tokens`` say the same to both versions.
    """
    llm_dir = Path(llm_dir)
    config_path = llm_dir / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        rope = config.get("rope_parameters") or {}
        if "rope_theta" not in config and "rope_theta" in rope:
            config["rope_theta"] = rope["rope_theta"]
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tok_path = llm_dir / "tokenizer_config.json"
    if tok_path.is_file():
        tok = json.loads(tok_path.read_text(encoding="utf-8"))
        extra = tok.get("extra_special_tokens")
        if isinstance(extra, list):
            del tok["extra_special_tokens"]
            tok.setdefault("additional_special_tokens", extra)
            tok_path.write_text(json.dumps(tok, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
