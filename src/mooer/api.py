"""The public entry point: ``MooER.from_pretrained(...)`` and ``model.transcribe(...)``.

Every front end (CLI, server, evaluation) goes through :meth:`MooER.transcribe`, so they all behave alike.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from mooer.audio import SAMPLE_RATE, audio_info, load_audio
from mooer.checkpoint import Loaded, load_checkpoint, save_native
from mooer.decoding import DEFAULT_CTC_WEIGHT, DecodingOptions, Result, get_preset
from mooer.errors import AudioError, ConfigError, MooerError
from mooer.features import FeatureExtractor, audio_tokens
from mooer.models.ctc_prefix import CTCPrefixScorer
from mooer.prompting import MULTITASK_SEPARATOR, PromptBuilder, collate_tokens, pad_features, split_multitask
from mooer.speed import TranscribeStats, default_workers, enable_shared_prefill

if TYPE_CHECKING:  # pragma: no cover
    from mooer.longform import LongFormOptions

AudioInput = Any  # a path, bytes, a file-like object, or a 16 kHz float waveform (np.ndarray / torch.Tensor)


@dataclass
class _LongInput:
    """An input long enough for VAD segmentation (decoded by :mod:`mooer.longform`)."""

    index: int
    key: str
    name: str
    source: Any
    duration: float


@dataclass
class _Prepared:
    index: int
    key: str
    name: str
    features: torch.Tensor
    duration: float


def _input_name(source: AudioInput, index: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<input {index}>"


def _input_error(name: str, exc: Exception) -> str:
    """The error text of one failed input: it names the input, whatever was raised.

    The per-input steps (probe, load, featurise, long-form decoding) turn any Exception into the input's
    error: decoders raise undocumented types on hostile files, and one file must never cost a batch its
    other results. KeyboardInterrupt and SystemExit are not Exceptions and still stop the call.
    """
    if isinstance(exc, AudioError) and exc.source == name:
        return str(exc)
    if isinstance(exc, MooerError):
        return f"{name}: {exc}"
    logging.getLogger("mooer").debug("unexpected error on %s", name, exc_info=exc)
    return f"{name}: unexpected {type(exc).__name__}: {exc}"


def default_key(name: str, index: int) -> str:
    """Utterance key of an input: the file name without extension, else its position."""
    if name.startswith("<"):
        return f"utt{index:05d}"
    return Path(name).stem


class MooER:
    """A loaded MooER model: feature extractor, network, tokenizer and prompts."""

    def __init__(self, loaded: Loaded):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.features = FeatureExtractor(loaded.cmvn)
        self.prompts = PromptBuilder(loaded.tokenizer, loaded.prompts)
        self.default_task = loaded.default_task
        self.downsample = self.model.adapter.k
        self.last_stats: TranscribeStats | None = None  # what the latest transcribe() did (padding, timing)
        enable_shared_prefill(self.model)  # beam search: one prefill per utterance, not per beam (exact)

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        *,
        variant: str | None = None,
        llm: str | os.PathLike | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        attn_implementation: str | None = None,
        quantize: str | None = None,
        compile: bool = False,
    ) -> "MooER":
        """Load an official release directory or a mooer model directory (None = the bundled default).

        ``device``/``dtype`` default to CUDA + bfloat16 when a GPU is present, else CPU + float32.
        ``attn_implementation`` is the LLM's attention kernel (None = the transformers default, ``"sdpa"``).
        Speed options (see :mod:`mooer.speed`): ``quantize="int8"`` (CPU, not exact) and ``compile=True``
        (CUDA: static KV cache + torch.compile, not exact).
        """
        if path is None:
            from mooer.assets import default_model_path

            path = default_model_path()
        model = cls(load_checkpoint(path, variant=variant, llm=llm, device=device, dtype=dtype,
                                    attn_implementation=attn_implementation))
        if quantize:
            from mooer.speed import quantize_llm

            quantize_llm(model, quantize)
        if compile:
            from mooer.speed import compile_model

            compile_model(model)
        return model

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the project's own format (safetensors + JSON config + tokenizer)."""
        return save_native(self.loaded, path)

    @property
    def tasks(self) -> list[str]:
        return sorted(self.loaded.prompts)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---------------------------------------------------------------------------------------- pipeline
    def featurize(self, source: AudioInput, name: str = "<input>") -> tuple[torch.Tensor, float]:
        """Audio → (T6, 560) features and seconds; raises AudioError naming the input if unusable."""
        wave = load_audio(source, name=name)
        return self.featurize_waveform(wave, name), len(wave) / SAMPLE_RATE

    def featurize_waveform(self, wave: np.ndarray, name: str = "<input>") -> torch.Tensor:
        """16 kHz waveform → (T6, 560) features; too short for one audio token is an AudioError."""
        feats = self.features(wave)
        if audio_tokens(feats.shape[0], self.downsample) == 0:
            raise AudioError(name, f"audio is {len(wave) / SAMPLE_RATE:.3f} s long, too short for one audio "
                                   f"token (at least 0.085 s is needed)")
        return feats

    def decode_batch(
        self, features: Sequence[torch.Tensor], task: str, options: DecodingOptions,
        max_new_tokens: int | None = None, streamer=None, *, forced: Sequence[Sequence[int]] | None = None,
    ) -> list[list[int]]:
        """One model call: pad, encode, splice, generate. Returns generated ids per row.

        ``forced``: per row, token ids fed after the prompt as if the model had written them (e.g. a
        reference transcript and the asr_ast separator); generation continues from there and returns only
        the new ids. The CTC head cannot score a forced start, so joint decoding is off then.
        """
        feats, lengths = pad_features(list(features))
        audio_len = [audio_tokens(int(n), self.downsample) for n in lengths]
        prompt = self.prompts.prompt_ids(task)
        prompts = [prompt] * len(audio_len) if forced is None else [prompt + list(ids) for ids in forced]
        tokens = collate_tokens(audio_len, prompts, self.prompts.pad_id).to(self.device)
        net = self.model
        with torch.inference_mode():
            states = net.encoder(feats.to(self.device, net.dtype), lengths.to(self.device))
            embeds = net.embed(tokens, net.adapter(states))
            processors = []
            weight = self.ctc_weight(options)
            if weight > 0 and task != "ast" and forced is None:  # ast writes no transcript for the CTC head
                stop = self._separator_ids if task == "asr_ast" else set()
                processors.append(CTCPrefixScorer(net.ctc_log_probs(states), lengths, weight, options.num_beams,
                                                  end_ids={net.eos_id}, stop_ids=stop,
                                                  pre_beam=options.ctc_candidates))
            return net.generate(embeds, tokens.attention_mask, options, max_new_tokens, streamer, processors)

    def ctc_weight(self, options: DecodingOptions) -> float:
        """The CTC weight of joint decoding these options give with this model (0 = LLM only)."""
        if options.ctc_weight is None:
            return DEFAULT_CTC_WEIGHT if self.model.ctc_head is not None else 0.0
        if options.ctc_weight > 0 and self.model.ctc_head is None:
            raise ConfigError(f"ctc_weight {options.ctc_weight}: this model has no CTC head (only models trained "
                             f"with model.ctc_weight > 0 and exported by mooer carry one); use 0")
        return options.ctc_weight

    @cached_property
    def _separator_ids(self) -> set[int]:
        """Tokens that contain the asr_ast separator: they end the transcript the CTC head scores."""
        vocab = self.tokenizer.get_vocab().values()
        return {i for i in vocab if MULTITASK_SEPARATOR in self.tokenizer.decode([i])}

    def text_of(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _result(self, p: _Prepared, task: str, ids: list[int]) -> Result:
        text = self.text_of(ids)
        res = Result(key=p.key, audio=p.name, task=task, text=text, duration=round(p.duration, 3),
                     token_ids=list(ids))
        if task == "asr_ast":
            res.asr, res.ast = split_multitask(text)
        return res

    def transcribe(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        *,
        task: str | None = None,
        batch_size: int = 8,
        decoding: str | DecodingOptions | None = "official",
        keys: Sequence[str] | None = None,
        progress: bool | Callable[[int], None] = False,
        num_workers: int | None = None,
        on_results: Callable[[list[Result]], None] | None = None,
        long_form: "LongFormOptions | bool | None" = None,
    ) -> list[Result]:
        """Transcribe (``asr``), translate (``ast``) or both (``asr_ast``) a list of inputs.

        Inputs are featurised, sorted by length, decoded in batches of ``batch_size`` and returned as
        :class:`Result` objects **in input order**. An input that cannot be read gets a Result with
        ``error`` set; the others still decode. A single (non-list) input also returns a list.

        Inputs are loaded and featurised on ``num_workers`` threads (None = up to 4), a window of inputs at a
        time (memory stays bounded on large lists). ``on_results`` is called with each decoded batch's
        results (and with the inputs that failed) as soon as they are ready, for incremental output. Padding
        and timing of the call are in :attr:`last_stats`.

        ``long_form`` (:class:`~mooer.longform.LongFormOptions`; ``True``/``False`` force it on/off): inputs
        longer than ``vad.max_segment_s`` (30 s) are cut with the VAD, decoded segment by segment with
        repetition guards, and stitched; their results carry ``segments``. Shorter inputs are decoded whole,
        exactly as the official implementation does.
        """
        from mooer.longform import LongFormOptions, transcribe_long

        single = isinstance(inputs, (str, os.PathLike, bytes, np.ndarray, torch.Tensor)) or hasattr(inputs, "read")
        items = [inputs] if single else list(inputs)
        task = task or self.default_task
        self.prompts.prompt_ids(task)  # validates the task
        options = get_preset(decoding)
        self.ctc_weight(options)  # validates it against the model
        if isinstance(long_form, bool) or long_form is None:
            long_form = LongFormOptions(enabled=long_form)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if keys is not None and len(keys) != len(items):
            raise ValueError(f"{len(keys)} keys for {len(items)} inputs")

        results: list[Result | None] = [None] * len(items)
        tick = progress if callable(progress) else None
        bar = None
        if progress is True and len(items) > 1:
            from tqdm import tqdm

            bar = tqdm(total=len(items), unit="utt", desc=task, dynamic_ncols=True)
            tick = bar.update
        workers = num_workers if num_workers is not None else default_workers(len(items))
        stats = TranscribeStats(inputs=len(items), batch_size=batch_size, workers=max(1, workers))
        prompt_len = len(self.prompts.prompt_ids(task))

        def prepare(i: int, source: AudioInput) -> _Prepared | _LongInput | Result:
            name = _input_name(source, i)
            key = keys[i] if keys is not None else default_key(name, i)
            try:
                if isinstance(source, (str, os.PathLike)):  # decide from the header: never load a long file
                    seconds = audio_info(source, name=name).duration
                    if long_form.applies(seconds):
                        return _LongInput(i, key, name, source, seconds)
                wave = load_audio(source, name=name)
                seconds = len(wave) / SAMPLE_RATE
                if long_form.applies(seconds):
                    return _LongInput(i, key, name, wave, seconds)
                return _Prepared(i, key, name, self.featurize_waveform(wave, name), seconds)
            except Exception as e:  # noqa: BLE001 - one bad input never stops the others (_input_error)
                return Result(key=key, audio=name, task=task, error=_input_error(name, e))

        def emit(done: list[Result]) -> None:
            if on_results and done:
                on_results(done)
            if tick and done:
                tick(len(done))

        window = max(64, 16 * batch_size)  # inputs featurised at a time; sorted by length inside a window
        pool = ThreadPoolExecutor(max_workers=stats.workers) if stats.workers > 1 and len(items) > 1 else None
        try:
            for first in range(0, len(items), window):
                indices = range(first, min(first + window, len(items)))
                started = time.perf_counter()
                if pool is not None:  # threads: soundfile and torch release the GIL
                    outcomes = list(pool.map(prepare, indices, [items[i] for i in indices]))
                else:
                    outcomes = [prepare(i, items[i]) for i in indices]
                stats.featurize_seconds += time.perf_counter() - started
                failed = [o for o in outcomes if isinstance(o, Result)]
                for r, o in zip(indices, outcomes):
                    if isinstance(o, Result):
                        results[r] = o
                stats.failed += len(failed)
                emit(failed)

                started = time.perf_counter()
                prepared = sorted((o for o in outcomes if isinstance(o, _Prepared)), key=lambda p: -p.features.shape[0])
                for start in range(0, len(prepared), batch_size):
                    chunk = prepared[start : start + batch_size]
                    frames = [p.features.shape[0] for p in chunk]
                    stats.features.add(frames)
                    stats.tokens.add([audio_tokens(n, self.downsample) + prompt_len for n in frames])
                    stats.audio_seconds += sum(p.duration for p in chunk)
                    rows = self.decode_batch([p.features for p in chunk], task, options)
                    for p, ids in zip(chunk, rows):
                        results[p.index] = self._result(p, task, ids)
                    emit([results[p.index] for p in chunk])
                for item in (o for o in outcomes if isinstance(o, _LongInput)):
                    try:
                        results[item.index] = transcribe_long(
                            self, item.source, key=item.key, name=item.name, duration=item.duration, task=task,
                            options=options, batch_size=batch_size, long_form=long_form)
                    except Exception as e:  # noqa: BLE001 - as in prepare(): this input fails, not the call
                        results[item.index] = Result(key=item.key, audio=item.name, task=task,
                                                     error=_input_error(item.name, e))
                        stats.failed += 1
                    stats.audio_seconds += item.duration
                    emit([results[item.index]])
                stats.decode_seconds += time.perf_counter() - started
        finally:
            if pool is not None:
                pool.shutdown()
            if bar is not None:
                bar.close()
        self.last_stats = stats
        logging.getLogger("mooer").info(stats.summary())
        return results  # type: ignore[return-value]
