"""The public entry point: ``MooER.from_pretrained(...)`` and ``model.transcribe(...)``.

:class:`MooER` is a facade over a loaded model: it reads and featurises inputs, routes long ones to
long-form decoding, and hands everything else to :class:`~mooer.inference.pipeline.Pipeline`, the one
features → Result path that the server, long-form decoding and training validation use as well.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mooer.audio import SAMPLE_RATE, audio_info, load_audio
from mooer.checkpoint import Loaded, load_checkpoint, save_native
from mooer.decoding import DecodingOptions, Result, get_preset
from mooer.errors import AudioError, MooerError
from mooer.features import FeatureExtractor, audio_tokens
from mooer.inference.engines import make_engine
from mooer.inference.longform import NO_SPEECH, LongFormOptions, transcribe_long
from mooer.inference.pipeline import Pipeline, Prepared
from mooer.inference.speed import default_workers
from mooer.inference.stats import TranscribeStats
from mooer.prompting import PromptBuilder

AudioInput = Any  # a path, bytes, a file-like object, or a 16 kHz float waveform (np.ndarray / torch.Tensor)


@dataclass
class _LongInput:
    """An input long enough for VAD segmentation (decoded by :mod:`mooer.inference.longform`)."""

    index: int
    key: str
    name: str
    source: Any
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

    def __init__(self, loaded: Loaded, engine: str = "hf", engine_options: dict | None = None):
        self.loaded = loaded
        self.network = loaded.model
        self.tokenizer = loaded.tokenizer
        self.features = FeatureExtractor(loaded.cmvn)
        self.prompts = PromptBuilder(loaded.tokenizer, loaded.prompts)
        self.default_task = loaded.default_task
        self.pipeline = Pipeline(self.network, self.tokenizer, self.prompts, self.features,
                                 make_engine(engine, self.network, self.tokenizer, **(engine_options or {})))
        self.last_stats: TranscribeStats | None = None  # what the latest transcribe() did (padding, timing)

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        *,
        variant: str | None = None,
        llm: str | os.PathLike | None = None,
        encoder: str | os.PathLike | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        attn_implementation: str | None = None,
        quantize: str | None = None,
        compile: bool = False,
        engine: str = "hf",
        engine_options: dict | None = None,
    ) -> "MooER":
        """Load an official release directory or a mooer model directory (None = the bundled default).

        ``encoder`` replaces an official release's ``paraformer_encoder/`` (CMVN included): a FunASR model
        directory (``model.pt`` + ``config.yaml`` + ``am.mvn``) or a directory holding ``paraformer-encoder.pth``.
        ``device``/``dtype`` default to CUDA + bfloat16 when a GPU is present, else CPU + float32.
        ``attn_implementation`` is the LLM's attention kernel (None = the transformers default, ``"sdpa"``).
        Speed options (see :mod:`mooer.inference.speed`): ``quantize="int8"`` (CPU, not exact) and ``compile=True``
        (CUDA: static KV cache + torch.compile, not exact). ``engine``: the decoding engine
        (:mod:`mooer.inference.engines`): ``"hf"`` = Hugging Face ``generate`` (every option), ``"vllm"`` = vLLM
        (greedy and sampling; :mod:`mooer.inference.vllm_engine`), with ``engine_options`` its settings.
        """
        if path is None:
            from mooer.assets import default_model_path

            path = default_model_path()
        model = cls(load_checkpoint(path, variant=variant, llm=llm, device=device, dtype=dtype,
                                    attn_implementation=attn_implementation, encoder=encoder), engine=engine,
                    engine_options=engine_options)
        if quantize:
            from mooer.inference.speed import quantize_llm

            quantize_llm(model, quantize)
        if compile:
            from mooer.inference.speed import compile_model

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
        return self.network.device

    @property
    def engine(self) -> str:
        return self.pipeline.engine.name

    @property
    def default_preset(self) -> str:
        """``official`` (beam search), or ``greedy`` on an engine without beam search (vllm)."""
        return "greedy" if self.engine == "vllm" else "official"

    # ---------------------------------------------------------------------------------------- pipeline
    def featurize(self, source: AudioInput, name: str = "<input>") -> tuple[torch.Tensor, float]:
        """Audio → (T6, 560) features and seconds; raises AudioError naming the input if unusable."""
        wave = load_audio(source, name=name)
        return self.featurize_waveform(wave, name), len(wave) / SAMPLE_RATE

    def featurize_waveform(self, wave: np.ndarray, name: str = "<input>") -> torch.Tensor:
        """16 kHz waveform → (T6, 560) features; too short for one audio token is an AudioError."""
        return self.pipeline.featurize_waveform(wave, name)

    def decode_batch(
        self, features: Sequence[torch.Tensor], task: str, options: DecodingOptions,
        max_new_tokens: int | None = None, streamer=None, *, forced: Sequence[Sequence[int]] | None = None,
    ) -> list[list[int]]:
        """One model call on a batch of features; returns the generated ids per row (see
        :meth:`Pipeline.generate <mooer.inference.pipeline.Pipeline.generate>`, which also gives log-probs)."""
        return [g.ids for g in self.pipeline.generate(features, task, options, max_new_tokens=max_new_tokens,
                                                      streamer=streamer, forced=forced)]

    def ctc_weight(self, options: DecodingOptions) -> float:
        """The CTC weight of joint decoding these options give with this model (0 = LLM only)."""
        return self.pipeline.ctc_weight(options)

    def text_of(self, ids: Sequence[int]) -> str:
        return self.pipeline.text_of(ids)

    def transcribe(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        *,
        task: str | None = None,
        batch_size: int = 8,
        decoding: str | DecodingOptions | None = None,
        keys: Sequence[str] | None = None,
        progress: bool | Callable[[int], None] = False,
        num_workers: int | None = None,
        on_results: Callable[[list[Result]], None] | None = None,
        long_form: "LongFormOptions | bool | None" = None,
        hotwords: Sequence[str | tuple[str, float]] | str | None = None,
        hotword_weight: float | None = None,
    ) -> list[Result]:
        """Transcribe (``asr``), translate (``ast``) or both (``asr_ast``) a list of inputs.

        Inputs are featurised, sorted by length, decoded in batches of ``batch_size`` and returned as
        :class:`Result` objects **in input order**. An input that cannot be read gets a Result with
        ``error`` set; the others still decode. A single (non-list) input also returns a list.

        Inputs are loaded and featurised on ``num_workers`` threads (None = up to 4), a window of inputs at a
        time (memory stays bounded on large lists). ``on_results`` is called with each decoded batch's
        results (and with the inputs that failed) as soon as they are ready, for incremental output. Padding
        and timing of the call are in :attr:`last_stats`.

        ``long_form`` (:class:`~mooer.inference.longform.LongFormOptions`; ``True``/``False`` force it on/off): inputs
        longer than ``vad.max_segment_s`` (30 s) are cut with the VAD, decoded segment by segment with
        repetition guards, and stitched; their results carry ``segments``. Shorter inputs are decoded whole,
        exactly as the official implementation does.

        ``hotwords``: phrases to favour (names, terms; :mod:`mooer.inference.hotwords`), as a list (entries
        ``"phrase"`` or ``("phrase", weight)``) or comma/newline-separated text; ``hotword_weight``: their
        bonus per token. Shorthands for ``DecodingOptions(hotwords=..., hotword_weight=...)``, applied on
        top of ``decoding``.
        """
        single = isinstance(inputs, (str, os.PathLike, bytes, np.ndarray, torch.Tensor)) or hasattr(inputs, "read")
        items = [inputs] if single else list(inputs)
        task = task or self.default_task
        options = get_preset(decoding or self.default_preset).replace(hotwords=hotwords, hotword_weight=hotword_weight)
        self.pipeline.check(task, options)
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

        def prepare(i: int, source: AudioInput) -> Prepared | _LongInput | Result:
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
                if long_form.no_speech(wave):
                    return Result(key=key, audio=name, task=task, duration=round(seconds, 3), notes=[NO_SPEECH])
                return Prepared(key, name, self.featurize_waveform(wave, name), seconds, index=i)
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
                settled = [o for o in outcomes if isinstance(o, Result)]  # failed, or no speech: nothing to decode
                for r, o in zip(indices, outcomes):
                    if isinstance(o, Result):
                        results[r] = o
                stats.failed += sum(1 for o in settled if not o.ok)
                emit(settled)

                started = time.perf_counter()

                def batch_done(batch: list[Prepared], done: list[Result]) -> None:
                    frames = [p.features.shape[0] for p in batch]
                    stats.features.add(frames)
                    stats.tokens.add([audio_tokens(n, self.pipeline.downsample) + prompt_len for n in frames])
                    stats.audio_seconds += sum(p.duration for p in batch)
                    for p, r in zip(batch, done):
                        results[p.index] = r
                    emit(done)

                self.pipeline.decode([o for o in outcomes if isinstance(o, Prepared)], task, options, batch_size,
                                     on_batch=batch_done)
                for item in (o for o in outcomes if isinstance(o, _LongInput)):
                    try:
                        results[item.index] = transcribe_long(
                            self.pipeline, item.source, key=item.key, name=item.name, duration=item.duration, task=task,
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
