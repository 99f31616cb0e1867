"""Audio loading: fixtures bit-exact, channels, resampling, compressed formats, streaming and errors."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from fixtures_path import AUDIO, CLIPS, REFERENCE
from mooer.audio import SAMPLE_RATE, AudioInfo, audio_info, iter_audio_chunks, load_audio
from mooer.errors import AudioError

TONE_HZ = 440.0


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(REFERENCE / "reference.safetensors")


def _sine(rate: int, seconds: float = 1.0, hz: float = TONE_HZ) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.shape[0])))
    return float(np.argmax(spectrum) * rate / samples.shape[0])


def _write_with_av(
    path: Path, samples: np.ndarray, rate: int, codec: str, fmt: str, video: bool = False
) -> Path:
    """Encode mono ``samples`` with FFmpeg through PyAV (optionally alongside a tiny video track)."""
    with av.open(str(path), "w", format=fmt) as container:
        if video:
            video_stream = container.add_stream("mpeg4", rate=10)
            video_stream.width, video_stream.height, video_stream.pix_fmt = 32, 32, "yuv420p"
        audio_stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*audio_stream.encode(frame), *audio_stream.encode(None)]:
            container.mux(packet)
        if video:
            black = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for _ in range(10):
                for packet in video_stream.encode(black):
                    container.mux(packet)
            for packet in video_stream.encode(None):
                container.mux(packet)
    return path


# --- fixtures: bit-exact ---------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", CLIPS)
def test_fixture_waveform_is_exact(clip: str, ref: dict[str, torch.Tensor]) -> None:
    waveform = load_audio(AUDIO / f"{clip}.wav")
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    np.testing.assert_array_equal(waveform, ref[f"{clip}/waveform"].numpy())


def test_fixture_info() -> None:
    assert audio_info(AUDIO / "demo.wav") == AudioInfo(105_405 / 16_000, 16_000, 2, 105_405)
    assert audio_info(str(AUDIO / "short.wav")).num_frames == 4_800


def test_other_source_kinds_equal_path(ref: dict[str, torch.Tensor]) -> None:
    path = AUDIO / "demo.wav"
    expected = ref["demo/waveform"].numpy()
    data = path.read_bytes()

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self._inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            chunk = self._inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    with open(path, "rb") as handle:
        from_handle = load_audio(handle)
    others = (load_audio(str(path)), load_audio(data), load_audio(io.BytesIO(data)), load_audio(Unseekable()))
    for loaded in (from_handle, *others):
        np.testing.assert_array_equal(loaded, expected)


# --- channels and arrays ---------------------------------------------------------------------------------


def test_stereo_is_averaged_in_float32(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pcm = rng.integers(-20000, 20000, size=(8000, 2), dtype=np.int16)
    sf.write(tmp_path / "stereo.wav", pcm, SAMPLE_RATE, subtype="PCM_16")
    expected = (pcm.astype(np.float32) / 32768).mean(axis=1, dtype=np.float32)
    np.testing.assert_array_equal(load_audio(tmp_path / "stereo.wav"), expected)
    assert audio_info(tmp_path / "stereo.wav").channels == 2


def test_array_sources() -> None:
    rng = np.random.default_rng(1)
    stereo = rng.uniform(-1, 1, size=(2, 1000)).astype(np.float32)
    mono = stereo.mean(axis=0, dtype=np.float32)
    np.testing.assert_array_equal(load_audio(stereo), mono)  # (channels, samples)
    np.testing.assert_array_equal(load_audio(stereo.T.copy()), mono)  # (samples, channels)
    np.testing.assert_array_equal(load_audio(torch.from_numpy(stereo)), mono)
    np.testing.assert_array_equal(load_audio(mono.astype(np.float64)), mono)
    pcm = np.array([0, 16384, -32768] * 200, dtype=np.int16)
    np.testing.assert_array_equal(load_audio(pcm), pcm.astype(np.float32) / 32768)
    assert audio_info(stereo) == AudioInfo(1000 / 16000, 16000, 2, 1000)


def test_array_with_source_rate_is_resampled() -> None:
    out = load_audio(_sine(8000), source_rate=8000)
    assert out.shape == (16000,)
    assert _peak_hz(out, 16000) == pytest.approx(TONE_HZ, abs=2)


def test_array_errors() -> None:
    with pytest.raises(AudioError, match="<array>: contains NaN"):
        load_audio(np.full(1000, np.nan, dtype=np.float32))
    with pytest.raises(AudioError, match="shape"):
        load_audio(np.zeros((20, 20, 3), dtype=np.float32))
    with pytest.raises(AudioError, match="0.010 s long"):
        load_audio(np.zeros(160, dtype=np.float32))


# --- resampling ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 44100])
def test_resampling_keeps_length_and_frequency(tmp_path: Path, rate: int) -> None:
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, _sine(rate), rate, subtype="PCM_16")
    out = load_audio(path)
    assert out.dtype == np.float32
    assert abs(out.shape[0] - SAMPLE_RATE) <= 1
    assert _peak_hz(out, SAMPLE_RATE) == pytest.approx(TONE_HZ, abs=2)
    assert np.abs(out).max() == pytest.approx(0.5, abs=0.02)
    assert audio_info(path).sample_rate == rate


def test_flac_and_other_target_rate(tmp_path: Path) -> None:
    path = tmp_path / "tone.flac"
    sf.write(path, _sine(22050), 22050, subtype="PCM_16")
    assert load_audio(path).shape[0] == 16000
    assert load_audio(path, sample_rate=8000).shape[0] == 8000


# --- compressed formats via PyAV -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "codec", "fmt", "rate", "video"),
    [
        ("tone.mp3", "libmp3lame", "mp3", 44100, False),
        ("tone.m4a", "aac", "mp4", 44100, False),
        ("tone.opus", "libopus", "ogg", 48000, False),
        ("tone_video.mp4", "aac", "mp4", 44100, True),
    ],
)
def test_compressed_formats_decode(
    tmp_path: Path, name: str, codec: str, fmt: str, rate: int, video: bool
) -> None:
    path = _write_with_av(tmp_path / name, _sine(rate), rate, codec, fmt, video=video)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.shape[0] - SAMPLE_RATE) < 0.1 * SAMPLE_RATE  # codec priming/padding only
    assert _peak_hz(out, SAMPLE_RATE) == pytest.approx(TONE_HZ, abs=3)
    info = audio_info(path)
    assert info.sample_rate == rate and info.channels == 1 and info.duration == pytest.approx(1.0, abs=0.1)
    np.testing.assert_array_equal(load_audio(path.read_bytes()), out)


# --- streaming -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["demo", "short"])
def test_chunks_equal_load_audio(clip: str) -> None:
    path = AUDIO / f"{clip}.wav"
    whole = load_audio(path)
    chunks = list(iter_audio_chunks(path, 0.25))
    assert all(c.shape[0] == 4000 for c in chunks[:-1]) and 0 < chunks[-1].shape[0] <= 4000
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_chunks_with_resampling_are_close(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    sf.write(wav, _sine(44100, seconds=3.0), 44100, subtype="PCM_16")
    m4a = _write_with_av(tmp_path / "tone.m4a", _sine(44100, seconds=3.0), 44100, "aac", "mp4")
    for path in (wav, m4a):  # soundfile blocks, then the PyAV decode loop
        whole = load_audio(path)
        streamed = np.concatenate(list(iter_audio_chunks(path, 0.1)))
        assert streamed.shape == whole.shape
        np.testing.assert_allclose(streamed, whole, atol=1e-5, rtol=0)


def test_chunks_of_array() -> None:
    samples = _sine(16000, seconds=1.05)
    chunks = list(iter_audio_chunks(samples, 0.5))
    assert [c.shape[0] for c in chunks] == [8000, 8000, 800]
    np.testing.assert_array_equal(np.concatenate(chunks), samples)


def test_chunk_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match="missing.wav: file not found"):
        iter_audio_chunks(missing, 1.0)  # raised on call, not on first next()
    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, np.zeros(160, dtype=np.int16), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(AudioError, match="tiny.wav: audio is 0.010 s long"):
        list(iter_audio_chunks(tiny, 1.0))
    with pytest.raises(ValueError):
        iter_audio_chunks(AUDIO / "short.wav", 0.0)


# --- errors ----------------------------------------------------------------------------------------------


def _assert_audio_error(path: Path, match: str) -> None:
    with pytest.raises(AudioError, match=match) as info:
        load_audio(path)
    assert str(path) in str(info.value)
    assert info.value.source == str(path)


def test_missing_file(tmp_path: Path) -> None:
    _assert_audio_error(tmp_path / "nope.wav", "file not found")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()
    _assert_audio_error(path, "empty")


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    _assert_audio_error(path, "not a decodable audio file")
    with pytest.raises(AudioError):
        audio_info(path)


def test_too_short_file(tmp_path: Path) -> None:
    path = tmp_path / "ten_ms.wav"
    sf.write(path, np.zeros(160, dtype=np.int16), SAMPLE_RATE, subtype="PCM_16")
    _assert_audio_error(path, r"audio is 0\.010 s long; at least 0\.025 s is needed")


def test_header_only_wav_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "no_samples.wav"
    sf.write(path, np.zeros(0, dtype=np.int16), SAMPLE_RATE, subtype="PCM_16")
    _assert_audio_error(path, r"audio is empty \(0 samples\)")


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    source = _write_with_av(tmp_path / "tone.m4a", _sine(44100), 44100, "aac", "mp4")
    path = tmp_path / "cut.m4a"
    path.write_bytes(source.read_bytes()[:200])
    _assert_audio_error(path, "not a decodable audio file")


def test_directory(tmp_path: Path) -> None:
    _assert_audio_error(tmp_path, "directory")


def test_empty_bytes() -> None:
    with pytest.raises(AudioError, match="<bytes>"):
        load_audio(b"")
