"""Speed options and their bookkeeping: threads, shared beam prefill, int8, compilation, padding statistics.

What is *exact* (official-preset ids unchanged on the golden fixtures, proven by ``tests/test_speed.py``):

* parallel loading + featurisation (``MooER.transcribe(num_workers=...)``): features are per-utterance, so the
  thread they are computed on does not matter;
* length-sorted batches (always on in ``transcribe``): each row's result equals its single-utterance result;
* merged LoRA (done at load), the KV cache (HF forces ``use_cache=True`` when generating from
  ``inputs_embeds``), SDPA attention in the LLM (the transformers 5 default; ``attn_implementation="eager"``
  gives the same ids on the fixtures);
* :func:`enable_shared_prefill` (on by default): one prefill per utterance instead of one per beam.

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
  audio + prompt four times. :func:`enable_shared_prefill` runs it once per utterance and hands HF the KV
  cache repeated per beam.
* **No Python loops over frames.** Fbank/LFR/CMVN, the SANM encoder (SDPA + depthwise conv for the FSMN
  memory), the adapter (one reshape) and the splice (one ``gather``) are vectorised; the only Python loops
  are over batch rows when padding/collating (``pad_features``, ``collate_tokens``): O(batch), not O(frames).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import resource
import sys
import types
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from torch import nn

log = logging.getLogger("mooer")

__all__ = [
    "QUANTIZE_CHOICES",
    "set_threads",
    "threads",
    "enable_shared_prefill",
    "disable_shared_prefill",
    "quantize_llm",
    "compile_model",
    "PaddingStats",
    "TranscribeStats",
    "batched_padding_fraction",
    "peak_memory_mb",
    "default_workers",
]

QUANTIZE_CHOICES = ("int8",)


def _network(model):
    """The :class:`~mooer.models.mooer.MooERModel` inside a ``MooER`` (or the network itself)."""
    return getattr(model, "model", model)


# ------------------------------------------------------------------------------------------------ threads


def set_threads(num_threads: int | None) -> int:
    """Set torch's intra-op thread count (``None``/0 leaves it alone); returns the previous value.

    On a machine shared with other busy processes, fewer threads than cores is often faster (OpenMP
    threads wait for each other); ``benchmarks/bench_speed.py --threads auto`` measures it.
    """
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    return previous


@contextlib.contextmanager
def threads(num_threads: int | None):
    """Context manager form of :func:`set_threads`."""
    previous = set_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------- llm.generate with the options


def _cache_kwarg(llm) -> str:
    """Name of the KV-cache argument: ``cache`` in recent transformers 5, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(llm.model.forward).parameters else "past_key_values"


def _mooer_generate(llm, *args, inputs_embeds=None, attention_mask=None, generation_config=None, **kwargs):
    """``llm.generate`` with the speed options switched on by flags on ``llm``. Bound with MethodType, so a
    ``copy.deepcopy`` of the model rebinds it to the copy."""
    if getattr(llm, "_mooer_static_cache", False):
        kwargs.setdefault("cache_implementation", "static")
    beams = getattr(generation_config, "num_beams", 1) or 1
    key = _cache_kwarg(llm) if hasattr(llm, "model") else None
    if (getattr(llm, "_mooer_shared_prefill", False) and key and beams > 1 and inputs_embeds is not None
            and attention_mask is not None and inputs_embeds.shape[1] > 1 and kwargs.get(key) is None
            and kwargs.get("cache_implementation") is None):
        from transformers import DynamicCache

        mask = attention_mask.long()
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as HF derives them from the mask
        cache = DynamicCache(config=llm.config)
        with torch.inference_mode():
            llm.model(inputs_embeds=inputs_embeds[:, :-1], attention_mask=mask[:, :-1],
                      position_ids=positions[:, :-1], use_cache=True, **{key: cache})
        cache.batch_repeat_interleave(beams)  # what HF does to the inputs, done to the cache instead
        kwargs[key] = cache
    return type(llm).generate(llm, *args, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                              generation_config=generation_config, **kwargs)


def _install_generate(llm) -> None:
    if not isinstance(llm.__dict__.get("generate"), types.MethodType):
        llm.generate = types.MethodType(_mooer_generate, llm)


def enable_shared_prefill(model) -> bool:
    """Beam search with one prefill per utterance instead of one per beam (exact on the fixtures).

    When ``llm.generate`` gets ``inputs_embeds`` and ``num_beams > 1`` (and no cache), the first S-1
    positions are run once per row, the KV cache is repeated ``num_beams`` times (what HF would do to the
    inputs) and passed in, so HF computes only the last position for each beam. Skipped under a static
    cache (:func:`compile_model`). ``model`` is a ``MooER`` or a ``MooERModel``; returns whether it is on.
    """
    llm = _network(model).llm
    if not hasattr(llm, "model"):  # not a HF decoder-only LM with a base model: leave it alone
        return False
    llm._mooer_shared_prefill = True
    _install_generate(llm)
    return True


def disable_shared_prefill(model) -> None:
    """Back to HF's own beam-search prefill (one per beam)."""
    _network(model).llm._mooer_shared_prefill = False


# ----------------------------------------------------------------------------------------- quantisation


def quantize_llm(model, dtype: str = "int8", include_lm_head: bool = True) -> dict:
    """Int8 dynamic quantisation of the LLM's linear layers, in place (CPU, float32 models only).

    ``model`` is a ``MooER`` or a ``MooERModel``. Weights become int8; activations are quantised per call.
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
        net.llm._mooer_static_cache = True
        _install_generate(net.llm)
        enabled["llm"] = "static KV cache (+ HF's automatic compile of the decoding step on CUDA)"
    return enabled


# ----------------------------------------------------------------------------------------------- padding


@dataclass
class PaddingStats:
    """Padded vs real positions over a set of batches (each batch is padded to its longest row)."""

    rows: int = 0
    batches: int = 0
    real: int = 0
    total: int = 0

    def add(self, lengths: Sequence[int]) -> None:
        lengths = [int(n) for n in lengths]
        if not lengths:
            return
        self.batches += 1
        self.rows += len(lengths)
        self.real += sum(lengths)
        self.total += max(lengths) * len(lengths)

    @property
    def padded(self) -> int:
        return self.total - self.real

    @property
    def fraction(self) -> float:
        """Share of computed positions that are padding (0.0 when nothing was added)."""
        return self.padded / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {"rows": self.rows, "batches": self.batches, "real": self.real, "total": self.total,
                "fraction": round(self.fraction, 4)}


def batched_padding_fraction(lengths: Iterable[int], batch_size: int, sort: bool = True) -> float:
    """Padding fraction of batching ``lengths`` in groups of ``batch_size``, longest first when ``sort``
    (what ``MooER.transcribe`` does), else in the given order."""
    lengths = list(lengths)
    if sort:
        lengths = sorted(lengths, reverse=True)
    stats = PaddingStats()
    for start in range(0, len(lengths), batch_size):
        stats.add(lengths[start : start + batch_size])
    return stats.fraction


@dataclass
class TranscribeStats:
    """What one ``MooER.transcribe`` call did (``MooER.last_stats``)."""

    inputs: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    batch_size: int = 0
    workers: int = 1
    featurize_seconds: float = 0.0  # loading + features, wall clock
    decode_seconds: float = 0.0  # encoder + LLM, wall clock
    features: PaddingStats = field(default_factory=PaddingStats)  # encoder frames (T6)
    tokens: PaddingStats = field(default_factory=PaddingStats)  # LLM input positions (audio + prompt)

    @property
    def seconds(self) -> float:
        return self.featurize_seconds + self.decode_seconds

    @property
    def rtf(self) -> float:
        """Real-time factor (processing seconds per audio second; smaller is faster)."""
        return self.seconds / self.audio_seconds if self.audio_seconds else 0.0

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "failed": self.failed, "audio_seconds": round(self.audio_seconds, 3),
                "batch_size": self.batch_size, "workers": self.workers,
                "featurize_seconds": round(self.featurize_seconds, 4),
                "decode_seconds": round(self.decode_seconds, 4), "rtf": round(self.rtf, 4),
                "feature_padding": self.features.to_dict(), "token_padding": self.tokens.to_dict()}

    def summary(self) -> str:
        return (f"mooer: {self.inputs} inputs ({self.failed} failed), {self.audio_seconds:.1f} s audio, "
                f"{self.features.batches} batches of <= {self.batch_size}; padding "
                f"{100 * self.features.fraction:.1f} % of encoder frames, {100 * self.tokens.fraction:.1f} % of "
                f"LLM input positions; featurise {self.featurize_seconds:.2f} s ({self.workers} workers), "
                f"decode {self.decode_seconds:.2f} s, RTF {self.rtf:.3f}")


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
