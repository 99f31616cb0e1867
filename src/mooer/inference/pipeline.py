"""The one decoding path: features → padded batch → engine → :class:`~mooer.decoding.Result`.

Every front end goes through :class:`Pipeline`: ``MooER.transcribe`` (CLI, API, sharded decoding),
long-form segments (:mod:`mooer.inference.longform`), the server's micro-batcher and its token streaming,
training validation and the benchmarks. There are two public levels:

* :meth:`Pipeline.decode` — prepared inputs → Results (length-sorted batches, text, asr/ast split);
* :meth:`Pipeline.generate` — one batch of features → :class:`~mooer.inference.engines.Generation` per row
  (pad, encode, adapt, splice, logits processors, engine).

Length-sorted batching is exact: each row's ids equal its single-utterance ids (padding is masked), which
is why it is always on.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from mooer.decoding import (
    DEFAULT_CTC_WEIGHT,
    DEFAULT_FILTERED_HOTWORD_WEIGHT,
    DEFAULT_HOTWORD_WEIGHT,
    DecodingOptions,
    Result,
)
from mooer.errors import AudioError, ConfigError
from mooer.features import SAMPLE_RATE, FeatureExtractor, audio_tokens
from mooer.inference.ctc_prefix import CTCPrefixScorer
from mooer.inference.engines import Engine, Generation, HFEngine
from mooer.inference.hotwords import HotwordList
from mooer.prompting import PromptBuilder, collate_tokens, pad_features
from mooer.tasks import MULTITASK_SEPARATOR, split_multitask

__all__ = ["Prepared", "Pipeline", "longest_first"]

T = TypeVar("T")


@dataclass
class Prepared:
    """An input ready to decode: its features and what its Result needs."""

    key: str
    name: str
    features: torch.Tensor
    duration: float
    index: int = 0  # position among the caller's inputs


def longest_first(items: Sequence[T], batch_size: int, length: Callable[[T], int]) -> Iterator[list[T]]:
    """``items`` sorted by ``length`` (longest first) and cut into batches of at most ``batch_size``:
    similar lengths share a batch, so little of it is padding."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    ordered = sorted(items, key=lambda item: -length(item))
    for start in range(0, len(ordered), batch_size):
        yield ordered[start : start + batch_size]


class Pipeline:
    """Features to Results for one loaded model (network, tokenizer, prompts, feature extractor, engine)."""

    def __init__(self, network: Any, tokenizer: Any, prompts: PromptBuilder, features: FeatureExtractor,
                 engine: Engine | None = None):
        self.network = network
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.features = features
        self.engine: Engine = engine if engine is not None else HFEngine(network)
        self.downsample = network.adapter.k
        self._graphs: OrderedDict[tuple, HotwordList] = OrderedDict()  # by (hotwords, weight), newest last
        self._graphs_lock = threading.Lock()

    @property
    def eos_id(self) -> int:
        return self.network.eos_id

    @property
    def device(self) -> torch.device:
        return self.network.device

    # ---------------------------------------------------------------------------------------- features
    def featurize_waveform(self, wave: np.ndarray, name: str = "<input>") -> torch.Tensor:
        """16 kHz waveform → (T6, 560) features; too short for one audio token is an AudioError."""
        feats = self.features(wave)
        if audio_tokens(feats.shape[0], self.downsample) == 0:
            raise AudioError(name, f"audio is {len(wave) / SAMPLE_RATE:.3f} s long, too short for one audio "
                                   f"token (at least 0.085 s is needed)")
        return feats

    # ---------------------------------------------------------------------------------------- decoding
    def ctc_weight(self, options: DecodingOptions) -> float:
        """The CTC weight of joint decoding these options give with this model (0 = LLM only)."""
        if options.ctc_weight is None:  # joint decoding where the model and the engine can do it
            joint = self.network.ctc_head is not None and getattr(self.engine, "joint_ctc", True)
            return DEFAULT_CTC_WEIGHT if joint else 0.0
        if options.ctc_weight > 0 and self.network.ctc_head is None:
            raise ConfigError(f"ctc_weight {options.ctc_weight}: this model has no CTC head (only models trained "
                              f"with model.ctc_weight > 0 and exported by mooer carry one); use 0")
        return options.ctc_weight

    def check(self, task: str, options: DecodingOptions) -> None:
        """Raise before any work if the task, the options or the engine do not fit this model."""
        self.prompts.prompt_ids(task)
        self.ctc_weight(options)
        self.engine.check(options)

    @cached_property
    def token_texts(self) -> list[str]:
        """Each token's text, by id (decoded once: what the separator and the hotword word edges look at)."""
        return self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])

    @cached_property
    def separator_ids(self) -> set[int]:
        """Tokens that contain the asr_ast separator: they end the transcript the CTC head scores."""
        return {i for i, text in enumerate(self.token_texts) if MULTITASK_SEPARATOR in text}

    #: hotword lists kept (building one tokenises every spelling of every phrase: the server's
    #: requests and the batches of one transcribe call reuse it)
    GRAPH_CACHE = 16

    def hotword_list(self, hotwords: tuple, weight: float) -> HotwordList:
        """A normalised hotword list as this model's tokenizer writes it, with its context graphs (cached)."""
        key = (hotwords, weight)
        with self._graphs_lock:
            listed = self._graphs.get(key)
            if listed is not None:
                self._graphs.move_to_end(key)
                return listed
        listed = HotwordList(self.tokenizer, hotwords, weight, self.token_texts)
        with self._graphs_lock:
            self._graphs[key] = listed
            if len(self._graphs) > self.GRAPH_CACHE:
                self._graphs.popitem(last=False)
        return listed

    def splice(self, features: Sequence[torch.Tensor], task: str, options: DecodingOptions, *,
               forced: Sequence[Sequence[int]] | None = None,
               on_encoded: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Pad, encode, adapt and splice one batch: ``(embeds (B, S, D), attention_mask (B, S), processors)``,
        what an engine decodes (:meth:`generate` hands them to this pipeline's engine; the server's vLLM queue
        submits rows itself). See :meth:`generate` for ``forced`` and ``on_encoded``."""
        net = self.network
        feats, lengths = pad_features(list(features))
        audio_len = [audio_tokens(int(n), self.downsample) for n in lengths]
        prompt = self.prompts.prompt_ids(task)
        prompts = [prompt] * len(audio_len) if forced is None else [prompt + list(ids) for ids in forced]
        tokens = collate_tokens(audio_len, prompts, self.prompts.pad_id).to(self.device)
        with torch.inference_mode():
            states = net.encoder(feats.to(self.device, net.dtype), lengths.to(self.device))
            if on_encoded is not None:
                on_encoded(states, lengths)
            embeds = net.embed(tokens, net.adapter(states))
            processors = []
            weight = self.ctc_weight(options)
            log_probs = None  # the CTC head's, for joint decoding and the hotword pre-filter
            if net.ctc_head is not None and forced is None and (weight > 0 or options.hotwords):
                log_probs = net.ctc_log_probs(states)
            if weight > 0 and task != "ast" and forced is None:  # ast writes no transcript for the CTC head
                stop = self.separator_ids if task == "asr_ast" else set()
                processors.append(CTCPrefixScorer(log_probs, lengths, weight, options.num_beams,
                                                  end_ids={net.eos_id}, stop_ids=stop,
                                                  pre_beam=options.ctc_candidates))
            if options.hotwords:
                # After joint CTC scoring, so the bonus is one more term of the joint score, added as it is:
                # the CTC scorer renormalises what it is given (a bonus before it would be scaled by 1 - w
                # and partly undone by the log-softmax) and returns -inf outside the LLM's pre-beam
                # candidates, which stay out: a hotword can tip the choice among tokens the models find
                # plausible but cannot force one that neither proposes.
                # Where the output is the transcript and the model has a CTC head, each utterance boosts only
                # the phrases its CTC posteriors support (the threshold; -inf: all of them).
                prefilter = task == "asr" and log_probs is not None and options.hotword_threshold > float("-inf")
                boost = options.hotword_weight or (DEFAULT_FILTERED_HOTWORD_WEIGHT if prefilter
                                                   else DEFAULT_HOTWORD_WEIGHT)
                processors.append(self.hotword_list(options.hotwords, boost).booster(
                    log_probs if prefilter else None, lengths, options.hotword_threshold))
        return embeds, tokens.attention_mask, processors

    def generate(self, features: Sequence[torch.Tensor], task: str, options: DecodingOptions, *,
                 max_new_tokens: int | None = None, streamer: Any = None,
                 forced: Sequence[Sequence[int]] | None = None,
                 on_encoded: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> list[Generation]:
        """One model call: pad, encode, adapt, splice, add the logits processors, run the engine.

        ``forced``: per row, token ids fed after the prompt as if the model had written them (e.g. a
        reference transcript and the asr_ast separator); generation continues from there and returns only
        the new ids. The CTC head cannot score a forced start, so joint decoding is off then.
        ``on_encoded(states, lengths)``: called with the encoder's output (B, T6, d) and the rows' valid frames,
        e.g. to read the CTC head's own transcript (:func:`~mooer.inference.ctc_prefix.ctc_best_path`) from the
        same encoder pass.
        """
        embeds, mask, processors = self.splice(features, task, options, forced=forced, on_encoded=on_encoded)
        with torch.inference_mode():
            return self.engine.generate(embeds, mask, options, max_new_tokens=max_new_tokens,
                                        processors=processors, streamer=streamer)

    def text_of(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def result(self, key: str, name: str, task: str, generation: Generation, duration: float | None) -> Result:
        """A Result from one row's output: text, and for asr_ast the transcript / translation split."""
        text = self.text_of(generation.ids)
        res = Result(key=key, audio=name, task=task, text=text,
                     duration=None if duration is None else round(duration, 3),
                     token_ids=list(generation.ids), token_logprobs=[round(p, 5) for p in generation.logprobs])
        if task == "asr_ast":
            res.asr, res.ast = split_multitask(text)
        return res

    def decode(self, items: Sequence[Prepared], task: str, options: DecodingOptions, batch_size: int, *,
               max_new_tokens: int | None = None,
               on_batch: Callable[[list[Prepared], list[Result]], None] | None = None) -> list[Result]:
        """Decode prepared inputs in length-sorted batches; returns Results in the order of ``items``.
        ``on_batch(batch, results)`` is called after each batch (incremental output, statistics)."""
        results: dict[int, Result] = {}
        for batch in longest_first(list(enumerate(items)), batch_size, lambda e: e[1].features.shape[0]):
            generations = self.generate([p.features for _, p in batch], task, options,
                                        max_new_tokens=max_new_tokens)
            done = [self.result(p.key, p.name, task, g, p.duration) for (_, p), g in zip(batch, generations)]
            for (i, _), r in zip(batch, done):
                results[i] = r
            if on_batch is not None:
                on_batch([p for _, p in batch], done)
        return [results[i] for i in range(len(items))]
