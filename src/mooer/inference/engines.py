"""Decoding engines: what turns spliced embeddings into token ids.

The decoder interface is small so that a second engine (vLLM) can be added without touching any caller::

    engine.generate(embeds, attention_mask, options, max_new_tokens=..., processors=[...], streamer=...)
        -> list[Generation]      # per row: new ids up to and including EOS, and their log-probabilities

* ``embeds``: (B, S, D) spliced audio + prompt embeddings, left-padded; ``attention_mask``: (B, S).
* ``options``: :class:`~mooer.decoding.DecodingOptions` (beams, budget, penalties). An engine that cannot
  honour them raises :class:`~mooer.errors.ConfigError` from :meth:`Engine.check`, naming an engine that can.
* ``processors``: logits processors in Hugging Face's convention, ``processor(generated, scores) -> scores``
  with ``generated`` (R, t) the ids written so far and ``scores`` (R, V) the next-token scores; rows are
  item-major (``R = B * num_beams``, row ``r`` belongs to item ``r // num_beams``). The CTC prefix scorer and
  the hotword booster follow it, so any engine that calls them per step can run them.
* ``streamer``: optional ``put(ids)``/``end()`` object (Hugging Face's streamer protocol), batch of one.

:class:`HFEngine` runs Hugging Face ``generate`` (greedy, beam search, sampling);
:class:`~mooer.inference.vllm_engine.VLLMEngine` runs vLLM (greedy and sampling; an optional extra).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch

from mooer.decoding import DecodingOptions, Generation
from mooer.errors import ConfigError

__all__ = ["Generation", "Engine", "HFEngine", "LogProbRecorder", "ENGINES", "make_engine"]


class Engine(Protocol):
    name: str

    def check(self, options: DecodingOptions) -> None:
        """Raise ConfigError if this engine cannot decode with ``options``."""

    def generate(self, embeds: torch.Tensor, attention_mask: torch.Tensor, options: DecodingOptions, *,
                 max_new_tokens: int | None = None, processors: Sequence[Any] = (),
                 streamer: Any = None) -> list[Generation]:
        """Decode a padded batch (see the module docstring)."""


class LogProbRecorder:
    """A pass-through logits processor that records each hypothesis's per-token log-probabilities.

    Beam search reorders hypotheses every step, so a row's history is kept by its prefix: at each step the
    log-softmax of a row (item, prefix) is remembered, and when a row (item, prefix + [c]) appears at the next
    step it inherits its parent's history plus log p(c). Only one step of full distributions is held, plus
    the EOS column of each step (a hypothesis that ends is never seen again as a row). Must come first in
    the processor list so that it sees the LLM's own scores.
    """

    def __init__(self, num_beams: int, eos_id: int):
        self.num_beams = max(1, num_beams)
        self.eos_id = eos_id
        self._history: dict[tuple, list[float]] = {}
        self._eos: dict[tuple, float] = {}
        self._rows: dict[tuple, int] = {}
        self._last: torch.Tensor | None = None

    def __call__(self, generated: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        keys = [(r // self.num_beams, tuple(ids)) for r, ids in enumerate(generated.tolist())]
        new = [k for k in dict.fromkeys(keys) if k not in self._history]
        if self._last is None:  # first step: empty prefixes
            for k in new:
                self._history[k] = []
        elif new:
            parents = [self._rows[(item, prefix[:-1])] for item, prefix in new]
            tokens = [prefix[-1] for _, prefix in new]
            values = self._last[torch.tensor(parents), torch.tensor(tokens)].tolist()
            for (item, prefix), value in zip(new, values):
                self._history[(item, prefix)] = self._history[(item, prefix[:-1])] + [value]
        eos = logp[:, self.eos_id].tolist()
        self._rows = {}
        for r, k in enumerate(keys):
            self._rows.setdefault(k, r)
            self._eos[k] = eos[r]
        self._last = logp
        return scores

    def logprobs(self, item: int, ids: Sequence[int]) -> list[float]:
        """Log-probabilities of ``ids``, the output of batch item ``item``."""
        if not ids:
            return []
        head = (item, tuple(ids[:-1]))
        history = self._history.get(head)
        if history is None:  # not produced under this recorder (e.g. a generate that never called it)
            return []
        if ids[-1] == self.eos_id and head in self._eos:
            return history + [self._eos[head]]
        row = self._rows.get(head)
        if row is None or self._last is None:
            return history
        return history + [float(self._last[row, ids[-1]])]


class HFEngine:
    """Hugging Face ``generate`` on the network's LLM (:meth:`mooer.models.mooer.MooERNetwork.generate`):
    greedy, beam search with the shared prefill, sampling; every option of :class:`DecodingOptions`."""

    name = "hf"
    joint_ctc = True  # runs the CTC prefix scorer

    def __init__(self, network: Any):
        self.network = network

    def check(self, options: DecodingOptions) -> None:
        return None

    def generate(self, embeds: torch.Tensor, attention_mask: torch.Tensor, options: DecodingOptions, *,
                 max_new_tokens: int | None = None, processors: Sequence[Any] = (),
                 streamer: Any = None) -> list[Generation]:
        recorder = LogProbRecorder(options.num_beams, self.network.eos_id)
        rows = self.network.generate(embeds, attention_mask, options, max_new_tokens, streamer,
                                     [recorder, *processors])
        return [Generation(ids, recorder.logprobs(i, ids)) for i, ids in enumerate(rows)]


ENGINES = ("hf", "vllm")


def make_engine(name: str, network: Any, tokenizer: Any = None, **kwargs: Any) -> Engine:
    """The engine called ``name`` for this network (``kwargs``: the engine's own settings, e.g.
    ``max_model_len`` for vllm)."""
    if name == "hf":
        if kwargs:
            raise ConfigError(f"the hf engine takes no engine settings, got {sorted(kwargs)}")
        return HFEngine(network)
    if name == "vllm":
        from mooer.inference.vllm_engine import VLLMEngine

        return VLLMEngine(network, tokenizer, **kwargs)
    raise ConfigError(f"unknown decoding engine {name!r}; choose one of {list(ENGINES)}")
