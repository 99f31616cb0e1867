"""Speed options: int8 quantisation and compilation; what is exact and what is not.

What is *exact* (official-preset ids unchanged on the golden fixtures, proven by ``tests/test_speed.py``):

* parallel loading + featurisation (``MooER.transcribe(num_workers=...)``): features are per-utterance, so the
  thread they are computed on does not matter;
* length-sorted batches (always on in ``transcribe``): each row's result equals its single-utterance result;
* merged LoRA (done at load), the KV cache (HF forces ``use_cache=True`` when generating from
  ``inputs_embeds``), SDPA attention in the LLM (the transformers 5 default; ``attn_implementation="eager"``
  gives the same ids on the fixtures);
* the shared beam prefill (``MooERNetwork.generate``, on by default): one prefill per utterance instead of one
  per beam.

What is *not* exact:

* :func:`quantize_llm` (int8 dynamic quantisation of the LLM's ``nn.Linear`` layers, CPU only): weights are
  rounded to 8 bits, activations are quantised per call; ids agree with fp32 on some but not all fixture
  runs (``benchmarks/RESULTS.md`` reports the agreement);
* bf16 on CUDA (the default there; the fixtures are fp32 and their README measures 4/10 beam runs identical);
* :func:`compile_model` (CUDA): static KV cache + ``torch.compile``; fused kernels round differently.

Things that were checked and need no code:

* **Early stop.** HF stops ``generate`` when every row has finished; a row that finishes earlier keeps its
  slot (greedy: it is fed pad tokens; beam: all beams of a finished item keep being computed) until the
  longest row of the batch is done. Finished rows therefore *do* cost compute; length-sorted batches keep the
  waste small because output length follows input length.
* **Prefix caching across utterances does not apply.** MooER puts the audio *before* the chat prompt
  (``[audio] <|im_start|>system ... assistant\\n``), so no two utterances share a token prefix and a
  prompt KV cache cannot be reused. The only shareable work is the prompt's token-embedding lookup, which
  is a gather costing microseconds (``PromptBuilder`` already caches the prompt ids).
* **What does share a prefix: the beams of one utterance.** HF beam search copies every input row
  ``num_beams`` times *before* the prefill, so the official preset (4 beams) computes the prefill of the
  audio + prompt four times. ``MooERNetwork.generate`` runs it once per utterance and hands HF the KV cache
  repeated per beam.
* **No Python loops over frames.** Fbank/LFR/CMVN, the SANM encoder (SDPA + depthwise conv for the FSMN
  memory), the adapter (one reshape) and the splice (one ``gather``) are vectorised; the only Python loops
  are over batch rows when padding/collating (``pad_features``, ``collate_tokens``): O(batch), not O(frames).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import warnings

import torch
from torch import nn

log = logging.getLogger("mooer")

__all__ = ["QUANTIZE_CHOICES", "quantize_llm", "compile_model", "peak_memory_mb", "default_workers"]

QUANTIZE_CHOICES = ("int8",)


def _network(model):
    """The :class:`~mooer.models.mooer.MooERNetwork` inside a ``MooER`` (or the network itself)."""
    return getattr(model, "network", model)


# ----------------------------------------------------------------------------------------- quantisation


def quantize_llm(model, dtype: str = "int8", include_lm_head: bool = True) -> dict:
    """Int8 dynamic quantisation of the LLM's linear layers, in place (CPU, float32 models only).

    ``model`` is a ``MooER`` or a ``MooERNetwork``. Weights become int8; activations are quantised per call.
    The token embedding stays float32 (a row gather reads one row per token). ``include_lm_head=False``
    keeps the output projection in float32 (slower: for Qwen2-0.5B it is the largest matrix).

    **Not exact**: ids can differ from float32. Returns ``{"dtype", "layers", "bytes_before",
    "bytes_after"}`` (also kept as ``model.quantized``). Idempotent.
    """
    if dtype not in QUANTIZE_CHOICES:
        raise ValueError(f"unknown quantisation {dtype!r}; choose one of {list(QUANTIZE_CHOICES)}")
    net = _network(model)
    if getattr(net, "quantized", None):
        return net.quantized
    llm = net.llm
    first = next(iter(llm.parameters()))
    if first.device.type != "cpu":
        raise ValueError("int8 dynamic quantisation runs on CPU only; load the model with device='cpu'")
    if first.dtype != torch.float32:
        raise ValueError(f"int8 dynamic quantisation needs a float32 model, this one is {first.dtype}")

    names = {n for n, m in llm.named_modules()
             if isinstance(m, nn.Linear) and (include_lm_head or not n.endswith("lm_head"))}
    before = sum(m.weight.numel() * m.weight.element_size() for n, m in llm.named_modules() if n in names)
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch points users to torchao; eager dynamic quantisation still works
        warnings.simplefilter("ignore")
        quantize_dynamic(llm, qconfig_spec=names, dtype=torch.qint8, inplace=True)
    after = sum(int(m.weight().numel()) for n, m in llm.named_modules() if n in names)
    info = {"dtype": dtype, "layers": len(names), "bytes_before": before, "bytes_after": after}
    net.quantized = info
    log.info("mooer: int8 dynamic quantisation of %d LLM linear layers (%.0f MB -> %.0f MB)", len(names),
             before / 1e6, after / 1e6)
    return info


# ------------------------------------------------------------------------------------------- compilation


def compile_model(model, static_cache: bool = True, encoder: bool = True, force: bool = False) -> dict:
    """CUDA speed-ups that change numerics slightly: a static KV cache (with which transformers compiles the
    one-token decoding step itself, ``GenerationMixin._valid_auto_compile_criteria``) and ``torch.compile``
    of the encoder. Guarded: on CPU it does nothing unless ``force=True``. The first batch of each new
    shape compiles (slow). The shared beam prefill is skipped under a static cache. Returns what it enabled.
    """
    net = _network(model)
    enabled: dict = {}
    if net.device.type != "cuda" and not force:
        log.warning("mooer: compile is for CUDA; ignored on %s", net.device)
        return enabled
    if encoder and not getattr(net.encoder, "_mooer_compiled", False):
        net.encoder.forward = torch.compile(net.encoder.forward, dynamic=True)
        net.encoder._mooer_compiled = True
        enabled["encoder"] = "torch.compile(dynamic=True)"
    if static_cache:
        net.static_cache = True
        enabled["llm"] = "static KV cache (+ HF's automatic compile of the decoding step on CUDA)"
    return enabled


# ------------------------------------------------------------------------------------------ misc helpers


def peak_memory_mb(device: str | torch.device | None = None) -> float:
    """Peak memory in MB: ``torch.cuda.max_memory_allocated`` on CUDA, else the process's ``ru_maxrss``."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def default_workers(num_inputs: int) -> int:
    """Threads for loading + featurising ``num_inputs`` inputs: up to 4, never more than the CPUs."""
    return max(1, min(4, os.cpu_count() or 1, num_inputs))
