"""Data augmentation for training (all off by default: the original trains without any).

- **Speed perturbation** on the waveform: a factor ``f`` drawn from ``speed_perturb`` (e.g. ``[0.9, 1.0,
  1.1]``) plays the audio ``f`` times faster — resampled with soxr from ``f · 16 kHz`` to 16 kHz, so the
  pitch changes too, as Kaldi/sox speed perturbation does.
- **Additive noise** on the waveform, with probability ``noise_prob``, at an SNR drawn from ``snr_db``:
  white noise, or a random excerpt of a file from ``noise_manifest`` (a manifest of noise recordings; its
  ``text`` field is ignored but must be non-empty, as in any manifest).
- **SpecAugment** on the CMVN-normalised LFR features ``(T6, lfr_m · 80)``: ``time_masks`` masks of up to
  ``time_mask_width`` LFR frames, and ``freq_masks`` masks of up to ``freq_mask_width`` mel bins, applied to
  the same bins of each of the ``lfr_m`` stacked frames. Masked values are set to 0.0 (the mean after CMVN).

Every random choice is drawn from ``(seed, epoch, utterance id)``, so an epoch is reproducible and a resumed
run sees the same augmented data.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

import numpy as np
import soxr
import torch

from mooer.features import NUM_MEL_BINS, SAMPLE_RATE

__all__ = ["AugmentConfig", "Augmenter"]


@dataclass
class AugmentConfig:
    """What to augment (defaults: nothing)."""

    speed_perturb: list[float] = field(default_factory=list)
    """Speed factors to draw from uniformly, e.g. ``[0.9, 1.0, 1.1]``; empty = off."""
    noise_prob: float = 0.0
    """Probability of adding noise to an utterance."""
    snr_db: tuple[float, float] = (10.0, 30.0)
    """Range of the signal-to-noise ratio, in dB."""
    noise_manifest: Optional[str] = None
    """Manifest of noise recordings; white noise when unset."""
    time_masks: int = 0
    time_mask_width: int = 10
    """Largest time mask, in LFR frames (60 ms each)."""
    freq_masks: int = 0
    freq_mask_width: int = 10
    """Largest frequency mask, in mel bins (of 80)."""

    def __post_init__(self) -> None:
        if any(f <= 0 for f in self.speed_perturb):
            raise ValueError(f"speed factors must be positive, got {self.speed_perturb}")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], got {self.noise_prob}")
        low, high = self.snr_db
        if low > high:
            raise ValueError(f"snr_db must be (low, high), got {self.snr_db}")
        if min(self.time_masks, self.freq_masks, self.time_mask_width, self.freq_mask_width) < 0:
            raise ValueError("mask counts and widths must be non-negative")

    @property
    def enabled(self) -> bool:
        """Whether anything is augmented at all."""
        return bool(
            any(f != 1.0 for f in self.speed_perturb)
            or self.noise_prob > 0
            or (self.time_masks and self.time_mask_width)
            or (self.freq_masks and self.freq_mask_width)
        )

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "AugmentConfig":
        """Build from a config mapping (unknown keys raise ``TypeError``)."""
        data = dict(data or {})
        if "snr_db" in data:
            data["snr_db"] = tuple(data["snr_db"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "snr_db": list(self.snr_db)}


def _rng(seed: int, epoch: int, key: str, stage: str) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}\x1f{epoch}\x1f{key}\x1f{stage}".encode("utf-8"), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


class Augmenter:
    """Applies an :class:`AugmentConfig` deterministically (picklable; noise files are read lazily)."""

    def __init__(self, config: AugmentConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self._noises: Optional[list] = None

    def waveform(self, samples: np.ndarray, *, key: str, epoch: int) -> np.ndarray:
        """Speed perturbation, then additive noise, of a mono 16 kHz float32 waveform."""
        cfg = self.config
        if cfg.speed_perturb:
            factor = float(_rng(self.seed, epoch, key, "speed").choice(cfg.speed_perturb))
            if factor != 1.0:
                samples = soxr.resample(samples, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ")
                samples = samples.astype(np.float32, copy=False)
        if cfg.noise_prob > 0:
            rng = _rng(self.seed, epoch, key, "noise")
            if rng.random() < cfg.noise_prob:
                samples = self._add_noise(samples, rng)
        return samples

    def _add_noise(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = self._noise(samples.shape[0], rng)
        signal_power = float(np.mean(samples.astype(np.float64) ** 2))
        noise_power = float(np.mean(noise.astype(np.float64) ** 2))
        if signal_power <= 0 or noise_power <= 0:
            return samples
        snr = rng.uniform(*self.config.snr_db)
        gain = np.sqrt(signal_power / (noise_power * 10 ** (snr / 10)))
        return (samples + gain * noise).astype(np.float32)

    def _noise(self, length: int, rng: np.random.Generator) -> np.ndarray:
        if self.config.noise_manifest is None:
            return rng.standard_normal(length).astype(np.float32)
        if self._noises is None:
            from mooer.data.manifest import read_manifest

            self._noises = read_manifest(self.config.noise_manifest).utterances
            if not self._noises:
                raise ValueError(f"{self.config.noise_manifest}: no usable noise recordings")
        noise = self._noises[int(rng.integers(len(self._noises)))].load_audio(SAMPLE_RATE)
        if noise.shape[0] < length:
            noise = np.tile(noise, -(-length // noise.shape[0]))
        offset = int(rng.integers(noise.shape[0] - length + 1))
        return noise[offset : offset + length]

    def features(self, feats: torch.Tensor, *, key: str, epoch: int) -> torch.Tensor:
        """SpecAugment of ``(T6, lfr_m · 80)`` features (a new tensor; the input is left untouched)."""
        cfg = self.config
        if not ((cfg.time_masks and cfg.time_mask_width) or (cfg.freq_masks and cfg.freq_mask_width)):
            return feats
        rng = _rng(self.seed, epoch, key, "specaug")
        out = feats.clone()
        frames = out.shape[0]
        for _ in range(cfg.time_masks):
            width = int(rng.integers(0, min(cfg.time_mask_width, frames) + 1))
            start = int(rng.integers(0, frames - width + 1))
            out[start : start + width] = 0.0
        stacked = out.view(frames, -1, NUM_MEL_BINS)  # (T6, lfr_m, 80): the same bins in every stacked frame
        for _ in range(cfg.freq_masks):
            width = int(rng.integers(0, min(cfg.freq_mask_width, NUM_MEL_BINS) + 1))
            start = int(rng.integers(0, NUM_MEL_BINS - width + 1))
            stacked[:, :, start : start + width] = 0.0
        return out
