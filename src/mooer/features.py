"""Acoustic features: Kaldi fbank → LFR stacking → CMVN, as the official front end (docs/design.md §1).

The pipeline turns a mono 16 kHz waveform in [-1, 1] into the ``(T6, 560)`` float32 matrix that the
SANM encoder consumes:

1. :func:`kaldi_fbank` — 80-bin log-mel fbank of ``waveform * 32768``, numerically the same computation as
   ``torchaudio.compliance.kaldi.fbank`` with MooER's parameters (25 ms Hamming window, 10 ms shift,
   ``snip_edges``, DC removal, pre-emphasis 0.97, FFT 512, power spectrum, 20–8000 Hz, log floor = float32
   eps, no dither), fully vectorised.
2. :func:`apply_lfr` — low-frame-rate stacking (m=7 frames every n=6), one gather.
3. :class:`Cmvn` — ``(x + shift) * scale`` with the vectors of an ``am.mvn`` file.

:class:`FeatureExtractor` chains the three. The length arithmetic is in :func:`fbank_frames`,
:func:`lfr_frames` and :func:`audio_tokens`.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from mooer.errors import AudioError, CheckpointError, ConfigError

__all__ = [
    "SAMPLE_RATE",
    "FRAME_LENGTH",
    "FRAME_SHIFT",
    "NUM_MEL_BINS",
    "LFR_M",
    "LFR_N",
    "FEATURE_DIM",
    "Waveform",
    "fbank_frames",
    "lfr_frames",
    "audio_tokens",
    "kaldi_fbank",
    "apply_lfr",
    "Cmvn",
    "FeatureExtractor",
]

# --- Fbank parameters in effect in MooER (torchaudio's Kaldi fbank). The front end only works at 16 kHz. ---
SAMPLE_RATE = 16000
"""The only sample rate the front end accepts (Kaldi ``sample_frequency``)."""
FRAME_LENGTH = 400
"""Samples per analysis window (25 ms). Shorter audio has no fbank frame at all."""
FRAME_SHIFT = 160
"""Samples between consecutive windows (10 ms)."""
NUM_MEL_BINS = 80
FFT_SIZE = 512  # FRAME_LENGTH rounded up to a power of two
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
HIGH_FREQ = SAMPLE_RATE / 2  # high_freq=0 means Nyquist
WAVEFORM_SCALE = 32768.0  # [-1, 1] float → int16 scale expected by Kaldi

# --- LFR and the encoder input. ---
LFR_M = 7
LFR_N = 6
FEATURE_DIM = NUM_MEL_BINS * LFR_M  # 560

# Frames per fbank call; bounds peak memory on long inputs (~17 MB per block). Frames are independent, so
# blocking does not change the result.
_FRAMES_PER_BLOCK = 8192

Waveform = Union[np.ndarray, torch.Tensor]
"""A 1-D mono waveform in [-1, 1] at :data:`SAMPLE_RATE` (numpy array or torch tensor)."""


# ---------------------------------------------------------------------------------------------------------
# Length arithmetic
# ---------------------------------------------------------------------------------------------------------


def fbank_frames(num_samples: int) -> int:
    """Number of fbank frames ``T`` for ``num_samples`` samples (``snip_edges``; 0 if under 25 ms)."""
    if num_samples < FRAME_LENGTH:
        return 0
    return 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def lfr_frames(num_fbank_frames: int, lfr_n: int = LFR_N) -> int:
    """Number of LFR frames ``T6 = ceil(T / n)``."""
    return -(-num_fbank_frames // lfr_n)


def audio_tokens(num_lfr_frames: int, downsample: int = 2) -> int:
    """Number of LLM audio tokens ``L = floor(T6 / downsample)`` produced by the adapter."""
    return num_lfr_frames // downsample


# ---------------------------------------------------------------------------------------------------------
# Fbank
# ---------------------------------------------------------------------------------------------------------


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * (1.0 + freq / 700.0).log()


@lru_cache(maxsize=None)
def _fbank_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The Hamming window ``(1, 400)`` and the mel filterbank ``(80, 257)``, float32, built once per device.

    Both are computed with the same float32 operations as torchaudio's ``get_mel_banks`` and
    ``torch.hamming_window`` so that the features match the reference bit for bit where possible.
    """
    window = torch.hamming_window(FRAME_LENGTH, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float32)

    mel_low = 1127.0 * math.log(1.0 + LOW_FREQ / 700.0)
    mel_high = 1127.0 * math.log(1.0 + HIGH_FREQ / 700.0)
    mel_delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    bins = torch.arange(NUM_MEL_BINS).unsqueeze(1)
    left = mel_low + bins * mel_delta
    center = mel_low + (bins + 1.0) * mel_delta
    right = mel_low + (bins + 2.0) * mel_delta
    fft_bin_width = SAMPLE_RATE / FFT_SIZE
    mel = _mel(fft_bin_width * torch.arange(FFT_SIZE // 2, dtype=torch.float32)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (80, 256)
    banks = torch.nn.functional.pad(banks, (0, 1))  # Nyquist bin gets weight 0 → (80, 257)
    return window.unsqueeze(0).to(device), banks.to(device)


def _as_1d_float32(waveform: Waveform) -> torch.Tensor:
    """A 1-D float32 torch view/copy of ``waveform``."""
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    elif not isinstance(waveform, torch.Tensor):
        raise TypeError(f"waveform must be a numpy array or a torch tensor, not {type(waveform).__name__}")
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be 1-D (mono samples), got shape {tuple(waveform.shape)}")
    return waveform.to(torch.float32)


def _fbank_block(frames: torch.Tensor) -> torch.Tensor:
    """Log-mel energies of a ``(T, 400)`` block of raw frames (int16 scale)."""
    window, banks = _fbank_constants(frames.device)
    frames = frames - frames.mean(dim=1, keepdim=True)  # remove DC offset
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # x[-1] := x[0]
    frames = (frames - PREEMPHASIS * previous) * window
    frames = torch.nn.functional.pad(frames, (0, FFT_SIZE - FRAME_LENGTH))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # (T, 257)
    energies = torch.mm(power, banks.T)
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()


def kaldi_fbank(waveform: Waveform) -> torch.Tensor:
    """Kaldi log-mel fbank of a mono 16 kHz waveform in [-1, 1] → ``(T, 80)`` float32.

    ``T = 1 + (N - 400) // 160``. Raises :class:`~mooer.errors.AudioError` when the waveform is shorter
    than one 25 ms window (the original crashes there). The result is on the waveform's device.
    """
    samples = _as_1d_float32(waveform)
    num_frames = fbank_frames(samples.numel())
    if num_frames == 0:
        raise AudioError(
            "waveform",
            f"audio is {samples.numel() / SAMPLE_RATE:.3f} s long; "
            f"at least {FRAME_LENGTH / SAMPLE_RATE:.3f} s is needed",
        )
    samples = samples.contiguous() * WAVEFORM_SCALE
    frames = samples.as_strided((num_frames, FRAME_LENGTH), (FRAME_SHIFT, 1))
    if num_frames <= _FRAMES_PER_BLOCK:
        return _fbank_block(frames)
    return torch.cat([_fbank_block(block) for block in frames.split(_FRAMES_PER_BLOCK)])


# ---------------------------------------------------------------------------------------------------------
# LFR
# ---------------------------------------------------------------------------------------------------------


def apply_lfr(fbank: torch.Tensor, m: int = LFR_M, n: int = LFR_N) -> torch.Tensor:
    """Low-frame-rate stacking: ``(T, D) → (ceil(T/n), m·D)``.

    LFR frame ``i`` is the concatenation of rows ``clamp(n·i + j − (m−1)//2, 0, T−1)``, ``j = 0…m−1``,
    which equals the original's "repeat the first row (m−1)//2 times, pad the end with the last row".
    """
    if fbank.ndim != 2 or fbank.shape[0] == 0:
        raise ValueError(f"fbank must be a non-empty (T, D) matrix, got shape {tuple(fbank.shape)}")
    num_frames, dim = fbank.shape
    out_frames = lfr_frames(num_frames, n)
    starts = torch.arange(out_frames, device=fbank.device) * n - (m - 1) // 2
    index = (starts.unsqueeze(1) + torch.arange(m, device=fbank.device)).clamp_(0, num_frames - 1)
    return fbank.index_select(0, index.reshape(-1)).reshape(out_frames, m * dim)


# ---------------------------------------------------------------------------------------------------------
# CMVN
# ---------------------------------------------------------------------------------------------------------


def _read_mvn_vectors(path: Path) -> dict[str, list[str]]:
    """The ``<AddShift>`` / ``<Rescale>`` vectors of a Kaldi nnet1 text file, as token lists."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the CMVN file: {exc}") from exc
    vectors: dict[str, list[str]] = {}
    for line, next_line in zip(lines, lines[1:]):
        tokens = line.split()
        if not tokens or tokens[0] not in ("<AddShift>", "<Rescale>"):
            continue
        values = next_line.split()
        if values and values[0] == "<LearnRateCoef>":
            vectors[tokens[0]] = values[3:-1]  # between "[" and "]"
    return vectors


@dataclass(frozen=True)
class Cmvn:
    """Global mean/variance normalisation: ``(x + shift) * scale`` (float32 vectors of length 560)."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __post_init__(self) -> None:
        if self.shift.shape != self.scale.shape or self.shift.ndim != 1:
            raise ConfigError(
                f"CMVN shift and scale must be vectors of the same length, "
                f"got {tuple(self.shift.shape)} and {tuple(self.scale.shape)}"
            )

    @property
    def dim(self) -> int:
        """Feature dimension the vectors apply to."""
        return self.shift.numel()

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike]) -> "Cmvn":
        """Parse an ``am.mvn`` file (Kaldi nnet1 text, ``<AddShift>`` then ``<Rescale>``).

        Raises :class:`~mooer.errors.CheckpointError` naming the file when it cannot be read, a vector
        is missing or not numeric, or the two vectors differ in length.
        """
        path = Path(path)
        vectors = _read_mvn_vectors(path)
        parsed: dict[str, torch.Tensor] = {}
        for key in ("<AddShift>", "<Rescale>"):
            tokens = vectors.get(key)
            if not tokens:
                raise CheckpointError(
                    f"{path}: no {key} vector (expected '{key}' then a '<LearnRateCoef> 0 [ … ]' line)"
                )
            try:
                # float64 first, then float32, as the original does
                values = np.array([float(t) for t in tokens], dtype=np.float64)
            except ValueError as exc:
                raise CheckpointError(f"{path}: the {key} vector is not numeric: {exc}") from exc
            parsed[key] = torch.from_numpy(values.astype(np.float32))
        shift, scale = parsed["<AddShift>"], parsed["<Rescale>"]
        if shift.numel() != scale.numel():
            raise CheckpointError(
                f"{path}: <AddShift> has {shift.numel()} values but <Rescale> has {scale.numel()}"
            )
        return cls(shift=shift, scale=scale)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(x + shift) * scale`` over the last axis (a new tensor; ``x`` is left untouched)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"CMVN expects features of size {self.dim}, got shape {tuple(x.shape)}")
        shift = self.shift.to(device=x.device, dtype=x.dtype)
        scale = self.scale.to(device=x.device, dtype=x.dtype)
        return (x + shift) * scale


# ---------------------------------------------------------------------------------------------------------
# The whole front end
# ---------------------------------------------------------------------------------------------------------


class FeatureExtractor:
    """Waveform → encoder input: fbank → LFR → CMVN, ``(T6, lfr_m · 80)`` float32."""

    def __init__(self, cmvn: Cmvn, lfr_m: int = LFR_M, lfr_n: int = LFR_N) -> None:
        if lfr_m < 1 or lfr_n < 1:
            raise ConfigError(f"lfr_m and lfr_n must be positive, got {lfr_m} and {lfr_n}")
        if cmvn.dim != NUM_MEL_BINS * lfr_m:
            raise ConfigError(
                f"CMVN has {cmvn.dim} values but LFR with m={lfr_m} gives {NUM_MEL_BINS * lfr_m} features"
            )
        self.cmvn = cmvn
        self.lfr_m = lfr_m
        self.lfr_n = lfr_n

    @classmethod
    def from_file(
        cls, am_mvn_path: Union[str, os.PathLike], lfr_m: int = LFR_M, lfr_n: int = LFR_N
    ) -> "FeatureExtractor":
        """Build the extractor from an ``am.mvn`` file."""
        return cls(Cmvn.from_file(am_mvn_path), lfr_m=lfr_m, lfr_n=lfr_n)

    @property
    def feature_dim(self) -> int:
        """Width of the output features (560 for MooER)."""
        return self.cmvn.dim

    def num_frames(self, num_samples: int) -> int:
        """Number of output frames ``T6`` for a waveform of ``num_samples`` samples (0 if under 25 ms)."""
        return lfr_frames(fbank_frames(num_samples), self.lfr_n)

    def __call__(self, waveform: Waveform) -> torch.Tensor:
        """Features of one mono 16 kHz waveform in [-1, 1] → ``(T6, feature_dim)`` float32."""
        return self.cmvn.apply(apply_lfr(kaldi_fbank(waveform), self.lfr_m, self.lfr_n))

    def extract_many(
        self, waveforms: Sequence[Waveform], num_threads: Optional[int] = None
    ) -> list[torch.Tensor]:
        """Features of several waveforms, in input order, computed on ``num_threads`` threads.

        ``None`` uses up to ``os.cpu_count()`` threads; 1 runs sequentially. Torch releases the GIL in its
        kernels, so threads give real parallelism here.
        """
        if num_threads is None:
            num_threads = os.cpu_count() or 1
        num_threads = max(1, min(num_threads, len(waveforms)))
        if num_threads == 1:
            return [self(w) for w in waveforms]
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            return list(pool.map(self, waveforms))
