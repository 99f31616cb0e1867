"""The public entry point: ``MooER.from_pretrained(...)`` and ``model.transcribe(...)``.

Every front end (CLI, server, evaluation) goes through :meth:`MooER.transcribe`, so they all behave alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from mooer.audio import load_audio
from mooer.checkpoint import Loaded, load_checkpoint, save_native
from mooer.decoding import DecodingOptions, Result, get_preset
from mooer.errors import AudioError, MooerError
from mooer.features import FeatureExtractor, audio_tokens
from mooer.prompting import PromptBuilder, collate_tokens, pad_features, split_multitask

AudioInput = Any  # a path, bytes, a file-like object, or a 16 kHz float waveform (np.ndarray / torch.Tensor)


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
    ) -> "MooER":
        """Load an official release directory or a mooer model directory (None = the bundled default).

        ``device``/``dtype`` default to CUDA + bfloat16 when a GPU is present, else CPU + float32.
        """
        if path is None:
            from mooer.assets import default_model_path

            path = default_model_path()
        return cls(load_checkpoint(path, variant=variant, llm=llm, device=device, dtype=dtype))

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
        """Waveform → (T6, 560) features; raises AudioError naming the input if unusable."""
        wave = load_audio(source)
        feats = self.features(wave)
        if audio_tokens(feats.shape[0], self.downsample) == 0:
            raise AudioError(name, f"audio is {len(wave) / 16000:.3f} s long, too short for one audio token "
                                   f"(at least 0.085 s is needed)")
        return feats, len(wave) / 16000.0

    def decode_batch(
        self, features: Sequence[torch.Tensor], task: str, options: DecodingOptions,
        max_new_tokens: int | None = None, streamer=None,
    ) -> list[list[int]]:
        """One model call: pad, encode, splice, generate. Returns generated ids per row."""
        feats, lengths = pad_features(list(features))
        audio_len = [audio_tokens(int(n), self.downsample) for n in lengths]
        prompt = self.prompts.prompt_ids(task)
        tokens = collate_tokens(audio_len, [prompt] * len(audio_len), self.prompts.pad_id).to(self.device)
        with torch.inference_mode():
            embeds = self.model.inputs_embeds(feats.to(self.device), lengths.to(self.device), tokens)
            return self.model.generate(embeds, tokens.attention_mask, options, max_new_tokens, streamer)

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
    ) -> list[Result]:
        """Transcribe (``asr``), translate (``ast``) or both (``asr_ast``) a list of inputs.

        Inputs are featurised, sorted by length, decoded in batches of ``batch_size`` and returned as
        :class:`Result` objects **in input order**. An input that cannot be read gets a Result with
        ``error`` set; the others still decode. A single (non-list) input also returns a list.
        """
        single = isinstance(inputs, (str, os.PathLike, bytes, np.ndarray, torch.Tensor)) or hasattr(inputs, "read")
        items = [inputs] if single else list(inputs)
        task = task or self.default_task
        self.prompts.prompt_ids(task)  # validates the task
        options = get_preset(decoding)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if keys is not None and len(keys) != len(items):
            raise ValueError(f"{len(keys)} keys for {len(items)} inputs")

        results: list[Result | None] = [None] * len(items)
        prepared: list[_Prepared] = []
        tick = progress if callable(progress) else None
        bar = None
        if progress is True and len(items) > 1:
            from tqdm import tqdm

            bar = tqdm(total=len(items), unit="utt", desc=task, dynamic_ncols=True)
            tick = bar.update
        for i, source in enumerate(items):
            name = _input_name(source, i)
            key = keys[i] if keys is not None else default_key(name, i)
            try:
                feats, seconds = self.featurize(source, name)
            except MooerError as e:
                results[i] = Result(key=key, audio=name, task=task, error=str(e))
                if tick:
                    tick(1)
                continue
            prepared.append(_Prepared(i, key, name, feats, seconds))

        prepared.sort(key=lambda p: -p.features.shape[0])  # length-sorted batches, little padding
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start : start + batch_size]
            rows = self.decode_batch([p.features for p in chunk], task, options)
            for p, ids in zip(chunk, rows):
                results[p.index] = self._result(p, task, ids)
            if tick:
                tick(len(chunk))
        if bar is not None:
            bar.close()
        return results  # type: ignore[return-value]
