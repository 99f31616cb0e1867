"""Logits processors described by plain data, for engines whose decoding loop runs in another process.

vLLM builds its logits processors inside its engine core (a child process under ``AsyncLLM``), so a
processor object of this process cannot be handed over. What goes with each request instead is a list of
*specs*, JSON-like dicts, and :class:`RequestProcessors` rebuilds the processors from them there, for one
request at a time (``generated`` is then (1, t) and ``scores`` (1, V), Hugging Face's convention):

* ``{"kind": "hotwords", "hotwords": [...], "weight": w}``: the hotword booster
  (:class:`~mooer.inference.hotwords.HotwordBooster`) on the context graph of that list;
* ``{"kind": "repetition_penalty", "penalty": p}``: transformers' ``RepetitionPenaltyLogitsProcessor``, on
  the generated ids only, as Hugging Face ``generate`` applies it when the prompt is embeddings (vLLM's own
  penalty also counts stale ids of the prompt slot then, and crashes in some versions);
* ``{"kind": "no_repeat_ngram", "size": n}``: transformers' ``NoRepeatNGramLogitsProcessor``.

Any processor object can take part by offering ``spec(item) -> dict | None`` (its description for batch
item ``item``, None when it does nothing for that item); one without it runs only on the ``hf`` engine.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Sequence

__all__ = ["RequestProcessors", "option_specs", "processor_specs"]


def option_specs(options: Any) -> list[dict]:
    """Specs of what :class:`~mooer.decoding.DecodingOptions` asks beyond plain greedy/sampling."""
    specs: list[dict] = []
    if options.repetition_penalty != 1.0:
        specs.append({"kind": "repetition_penalty", "penalty": float(options.repetition_penalty)})
    if options.no_repeat_ngram_size > 0:
        specs.append({"kind": "no_repeat_ngram", "size": int(options.no_repeat_ngram_size)})
    return specs


def processor_specs(processors: Sequence[Any], item: int, engine: str) -> list[dict]:
    """The specs of ``processors`` for batch item ``item``; a processor without ``spec`` is a ConfigError."""
    from mooer.errors import ConfigError

    specs = []
    for processor in processors:
        spec = getattr(processor, "spec", None)
        if spec is None:
            raise ConfigError(f"{type(processor).__name__} runs only on the 'hf' engine, not on {engine!r} "
                              f"(use --engine hf)")
        described = spec(item)
        if described is not None:  # None: nothing to do for this item
            specs.append(described)
    return specs


class RequestProcessors:
    """Builds per-request processors from specs (see the module docstring), with the tokenizer loaded lazily
    from ``tokenizer`` (a tokenizer or a directory) and the last hotword graphs cached."""

    GRAPH_CACHE = 16

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self._token_texts: list[str] | None = None
        self._graphs: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        if isinstance(self._tokenizer, (str, bytes)) or hasattr(self._tokenizer, "__fspath__"):
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self._tokenizer))
        return self._tokenizer

    def _graph(self, hotwords: Any, weight: float) -> Any:
        from mooer.inference.hotwords import build_graph, normalize_hotwords

        listed = normalize_hotwords([tuple(h) if isinstance(h, list) else h for h in hotwords])
        key = (listed, float(weight))
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None:
                if self._token_texts is None:
                    tok = self.tokenizer
                    self._token_texts = tok.batch_decode([[i] for i in range(len(tok))])
                graph = build_graph(self.tokenizer, listed, float(weight), self._token_texts)
                self._graphs[key] = graph
                if len(self._graphs) > self.GRAPH_CACHE:
                    self._graphs.popitem(last=False)
            else:
                self._graphs.move_to_end(key)
            return graph

    def build(self, specs: Sequence[dict]) -> list[Callable]:
        """One request's processors, in the order of ``specs``; an unknown kind is a ValueError."""
        from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

        from mooer.inference.hotwords import HotwordBooster

        out: list[Callable] = []
        for spec in specs:
            kind = spec.get("kind")
            if kind == "hotwords":
                out.append(HotwordBooster(self._graph(spec["hotwords"], spec["weight"])))
            elif kind == "repetition_penalty":
                out.append(RepetitionPenaltyLogitsProcessor(float(spec["penalty"])))
            elif kind == "no_repeat_ngram":
                out.append(NoRepeatNGramLogitsProcessor(int(spec["size"])))
            else:
                raise ValueError(f"unknown logits processor spec {spec!r}")
        return out
