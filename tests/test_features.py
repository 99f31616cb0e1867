"""Feature front end (fbank → LFR → CMVN) against the official reference tensors (fixtures README §3, §5, §7).

The reference was computed with torchaudio's Kaldi fbank; this implementation reproduces it bit for bit on the
fixture clips, but the tests use the README's recommended tolerances.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import mooer.features as features
from fixtures_path import AM_MVN, CLIPS, REFERENCE
from mooer.errors import AudioError, CheckpointError, ConfigError
from mooer.features import (
    Cmvn,
    FeatureExtractor,
    apply_lfr,
    audio_tokens,
    fbank_frames,
    kaldi_fbank,
    lfr_frames,
)


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(REFERENCE / "reference.safetensors")


@pytest.fixture(scope="module")
def ref_json() -> dict:
    return json.loads((REFERENCE / "reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor.from_file(AM_MVN)


# --- golden comparisons, per clip ------------------------------------------------------------------------


@pytest.mark.parametrize("clip", CLIPS)
def test_fbank_matches_reference(clip: str, ref: dict[str, torch.Tensor], ref_json: dict) -> None:
    fbank = kaldi_fbank(ref[f"{clip}/waveform"])
    expected = ref[f"{clip}/fbank"]
    assert fbank.dtype == torch.float32
    assert fbank.shape == (ref_json["clips"][clip]["T"], 80) == expected.shape
    diff = (fbank - expected).abs()
    assert diff.max().item() <= 5e-3
    assert diff.mean().item() < 1e-4


@pytest.mark.parametrize("clip", CLIPS)
def test_fbank_accepts_numpy(clip: str, ref: dict[str, torch.Tensor]) -> None:
    waveform = ref[f"{clip}/waveform"]
    assert torch.equal(kaldi_fbank(waveform.numpy()), kaldi_fbank(waveform))


@pytest.mark.parametrize("clip", CLIPS)
def test_lfr_from_reference_fbank_is_exact(clip: str, ref: dict[str, torch.Tensor], ref_json: dict) -> None:
    lfr = apply_lfr(ref[f"{clip}/fbank"])
    assert lfr.shape == (ref_json["clips"][clip]["T6"], 560)
    assert torch.equal(lfr, ref[f"{clip}/lfr"])


@pytest.mark.parametrize("clip", CLIPS)
def test_cmvn_from_reference_lfr(
    clip: str, ref: dict[str, torch.Tensor], extractor: FeatureExtractor
) -> None:
    feats = extractor.cmvn.apply(ref[f"{clip}/lfr"])
    torch.testing.assert_close(feats, ref[f"{clip}/feats"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("clip", CLIPS)
def test_features_end_to_end(
    clip: str, ref: dict[str, torch.Tensor], ref_json: dict, extractor: FeatureExtractor
) -> None:
    waveform = ref[f"{clip}/waveform"]
    feats = extractor(waveform)
    assert feats.dtype == torch.float32
    torch.testing.assert_close(feats, ref[f"{clip}/feats"], atol=1e-3, rtol=0)
    info = ref_json["clips"][clip]
    assert fbank_frames(waveform.numel()) == info["T"]
    assert lfr_frames(info["T"]) == info["T6"] == extractor.num_frames(waveform.numel())
    assert audio_tokens(info["T6"]) == info["L"]


def test_extract_many_keeps_order(ref: dict[str, torch.Tensor], extractor: FeatureExtractor) -> None:
    waveforms = [ref[f"{clip}/waveform"] for clip in CLIPS]
    for threads in (None, 1, 3):
        results = extractor.extract_many(waveforms, num_threads=threads)
        assert [r.shape for r in results] == [ref[f"{clip}/feats"].shape for clip in CLIPS]
        for clip, feats in zip(CLIPS, results):
            torch.testing.assert_close(feats, ref[f"{clip}/feats"], atol=1e-3, rtol=0)
    assert extractor.extract_many([]) == []


# --- fbank details ---------------------------------------------------------------------------------------


def test_fbank_blocking_does_not_change_result(
    ref: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    waveform = ref["zh1/waveform"]
    whole = kaldi_fbank(waveform)
    monkeypatch.setattr(features, "_FRAMES_PER_BLOCK", 7)
    torch.testing.assert_close(kaldi_fbank(waveform), whole, atol=1e-5, rtol=0)


def test_fbank_too_short() -> None:
    assert kaldi_fbank(np.zeros(400, dtype=np.float32)).shape == (1, 80)
    with pytest.raises(AudioError, match="0.025 s"):
        kaldi_fbank(np.zeros(399, dtype=np.float32))


def test_fbank_silence_hits_log_floor() -> None:
    fbank = kaldi_fbank(torch.zeros(16000))
    assert torch.all(fbank == math.log(torch.finfo(torch.float32).eps))


def test_fbank_rejects_multichannel() -> None:
    with pytest.raises(ValueError, match="1-D"):
        kaldi_fbank(torch.zeros(2, 16000))


# --- LFR --------------------------------------------------------------------------------------------------


def _lfr_original(fbank: torch.Tensor, m: int = 7, n: int = 6) -> torch.Tensor:
    """The original procedure (spec §2.4): pad with (m−1)//2 copies of row 0, windows of m at stride n,
    fill a window that runs past the end with the last row."""
    rows = [fbank[0]] * ((m - 1) // 2) + list(fbank)
    out = []
    for i in range(math.ceil(fbank.shape[0] / n)):
        window = rows[i * n : i * n + m]
        window += [fbank[-1]] * (m - len(window))
        out.append(torch.cat(window))
    return torch.stack(out)


@pytest.mark.parametrize("num_frames", [1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 18, 28, 31])
def test_lfr_matches_original_procedure(num_frames: int) -> None:
    fbank = torch.randn(num_frames, 80)
    assert torch.equal(apply_lfr(fbank), _lfr_original(fbank))


def test_lfr_other_m_n() -> None:
    fbank = torch.randn(23, 4)
    assert torch.equal(apply_lfr(fbank, m=5, n=3), _lfr_original(fbank, m=5, n=3))


# --- length arithmetic (spec §2.6) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_samples", "t", "t6", "tokens"),
    [
        (3_200, 18, 3, 1),
        (16_000, 98, 17, 8),
        (105_405, 657, 110, 55),
        (160_000, 998, 167, 83),
        (320_000, 1_998, 333, 166),
        (480_000, 2_998, 500, 250),
        (1_359, 6, 1, 0),
        (399, 0, 0, 0),
    ],
)
def test_length_table(num_samples: int, t: int, t6: int, tokens: int) -> None:
    assert fbank_frames(num_samples) == t
    assert lfr_frames(t) == t6
    assert audio_tokens(t6) == tokens


# --- CMVN -------------------------------------------------------------------------------------------------


def test_cmvn_parse_shipped_file() -> None:
    cmvn = Cmvn.from_file(AM_MVN)
    assert cmvn.shift.shape == cmvn.scale.shape == (560,)
    assert cmvn.shift.dtype == cmvn.scale.dtype == torch.float32
    expected_shift = torch.tensor([-8.311879, -8.600912, -9.615928, -10.43595, -11.21292])
    expected_scale = torch.tensor([0.155775, 0.154484, 0.1527379, 0.1518718, 0.1506028])
    torch.testing.assert_close(cmvn.shift[:5], expected_shift, atol=0, rtol=0)
    torch.testing.assert_close(cmvn.scale[:5], expected_scale, atol=0, rtol=0)
    assert cmvn.shift.max().item() == pytest.approx(-8.311879)
    assert cmvn.shift.min().item() == pytest.approx(-15.05122)
    assert cmvn.scale.min().item() == pytest.approx(0.1435867)
    assert cmvn.scale.max().item() == pytest.approx(0.155775)
    assert torch.equal(cmvn.shift, cmvn.shift[:80].repeat(7))  # an 80-dim vector tiled 7 times


def test_cmvn_apply_is_not_in_place() -> None:
    cmvn = Cmvn.from_file(AM_MVN)
    x = torch.randn(3, 560)
    before = x.clone()
    y = cmvn.apply(x)
    assert torch.equal(x, before)
    assert torch.equal(y, (before + cmvn.shift) * cmvn.scale)
    with pytest.raises(ValueError, match="560"):
        cmvn.apply(torch.zeros(3, 80))


def _mvn_text(shift: list[float], scale: list[float] | None) -> str:
    def vector(values: list[float]) -> str:
        return "<LearnRateCoef> 0 [ " + " ".join(str(v) for v in values) + " ]"

    size = len(shift)
    lines = ["<Nnet>", f"<Splice> {size} {size}", "[ 0 ]", f"<AddShift> {size} {size}", vector(shift)]
    if scale is not None:
        lines += [f"<Rescale> {len(scale)} {len(scale)}", vector(scale)]
    return "\n".join(lines + ["</Nnet>", ""])


def test_cmvn_small_file(tmp_path: Path) -> None:
    path = tmp_path / "small.mvn"
    path.write_text(_mvn_text([-1.0, -2.5], [0.5, 2.0]))
    cmvn = Cmvn.from_file(path)
    assert cmvn.shift.tolist() == [-1.0, -2.5] and cmvn.scale.tolist() == [0.5, 2.0]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (_mvn_text([-1.0, -2.0], None), "<Rescale>"),
        (_mvn_text([-1.0, -2.0], [1.0]), "2 values but <Rescale> has 1"),
        ("<Nnet>\n</Nnet>\n", "<AddShift>"),
        (_mvn_text([-1.0, -2.0], [1.0, 2.0]).replace("-2.0", "x"), "not numeric"),
    ],
)
def test_cmvn_bad_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.mvn"
    path.write_text(text)
    with pytest.raises(CheckpointError, match=match) as info:
        Cmvn.from_file(path)
    assert str(path) in str(info.value)


def test_cmvn_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.mvn"
    with pytest.raises(CheckpointError) as info:
        Cmvn.from_file(path)
    assert str(path) in str(info.value)


def test_extractor_rejects_mismatched_cmvn() -> None:
    cmvn = Cmvn(shift=torch.zeros(80), scale=torch.ones(80))
    with pytest.raises(ConfigError, match="560"):
        FeatureExtractor(cmvn)
    assert FeatureExtractor(cmvn, lfr_m=1, lfr_n=1).feature_dim == 80
