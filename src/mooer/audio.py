"""Audio loading: a file, bytes, a stream or an array → mono float32 waveform in [-1, 1] at 16 kHz.

Decoding: soundfile (libsndfile: WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF, …) is tried first; it reads 16-bit
PCM as exactly ``int16 / 32768``, which the reference fixtures require. Whatever it cannot open (M4A/AAC,
WebM, video containers' audio tracks, …) is decoded by PyAV (FFmpeg), first audio stream.

Channels are averaged in float32 (the official inference path, spec §2.1), then the mono signal is resampled
with soxr (quality ``HQ``) when its rate differs from the requested one. Averaging before resampling is
equivalent (both are linear) and cheaper.

Every failure (missing file, empty or non-audio content, corrupt data, audio shorter than one 25 ms fbank
window) raises :class:`mooer.errors.AudioError` naming the source and the reason.
"""

from __future__ import annotations

import abc
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Optional, Union

import av
import av.error
import numpy as np
import soundfile as sf
import soxr
import torch

from mooer.errors import AudioError
from mooer.features import FRAME_LENGTH, SAMPLE_RATE

__all__ = [
    "SAMPLE_RATE",
    "AudioSource",
    "AudioInfo",
    "load_audio",
    "audio_info",
    "iter_audio_chunks",
    "MEDIA_EXTENSIONS",
    "find_audio_files",
]

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, np.ndarray, torch.Tensor]
"""Anything :func:`load_audio` accepts: a path, encoded bytes, a binary file object, or decoded samples."""

MAX_CHANNELS = 8
"""Largest channel count accepted for array sources (used to tell the channel axis from the time axis)."""

_RESAMPLE_QUALITY = "HQ"
_BLOCK_FRAMES = 1 << 16  # frames per soundfile read when streaming


@dataclass(frozen=True)
class AudioInfo:
    """What a source contains, at its native sample rate."""

    duration: float
    """Seconds."""
    sample_rate: int
    channels: int
    num_frames: int
    """Samples per channel. Exact for PCM/FLAC; for compressed containers it may come from the container's
    duration and be off by up to a codec frame."""


# ---------------------------------------------------------------------------------------------------------
# Sources and decoders
# ---------------------------------------------------------------------------------------------------------


class _Decoder(abc.ABC):
    """An opened encoded source: header facts plus a stream of mono float32 blocks at the native rate."""

    name: str
    sample_rate: int
    channels: int
    num_frames: Optional[int]  # None when the header does not say

    @abc.abstractmethod
    def blocks(self) -> Iterator[np.ndarray]:
        """Decode from the current position to the end."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the underlying file or container (not a caller-owned file object)."""

    def __enter__(self) -> "_Decoder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _downmix(samples: np.ndarray, channel_axis: int) -> np.ndarray:
    """Mono float32: the float32 mean over ``channel_axis`` (just a reshape for one channel)."""
    if samples.shape[channel_axis] == 1:
        return np.ascontiguousarray(samples.reshape(-1), dtype=np.float32)
    return samples.mean(axis=channel_axis, dtype=np.float32)


class _SoundfileDecoder(_Decoder):
    def __init__(self, name: str, file: sf.SoundFile) -> None:
        self.name = name
        self._file = file
        self.sample_rate = file.samplerate
        self.channels = file.channels
        self.num_frames = file.frames if file.seekable() else None

    def blocks(self) -> Iterator[np.ndarray]:
        try:
            while True:
                block = self._file.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    return
                yield _downmix(block, channel_axis=1)
        except (sf.SoundFileError, RuntimeError) as exc:
            raise AudioError(self.name, f"decoding failed (corrupt data?): {exc}") from exc

    def close(self) -> None:
        self._file.close()


class _PyAVDecoder(_Decoder):
    def __init__(self, name: str, container: av.container.InputContainer) -> None:
        self.name = name
        self._container = container
        streams = container.streams.audio
        if not streams:
            container.close()
            raise AudioError(name, "contains no audio stream")
        self._stream = streams[0]
        context = self._stream.codec_context
        self.sample_rate = int(context.sample_rate or 0)
        self.channels = len(context.layout.channels) if context.layout else 0
        if self.sample_rate <= 0 or self.channels <= 0:
            container.close()
            raise AudioError(name, "audio stream has no sample rate or channel layout")
        self.num_frames = self._frames_from_duration()

    def _frames_from_duration(self) -> Optional[int]:
        stream = self._stream
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            seconds = self._container.duration / av.time_base
        else:
            return None
        return round(seconds * self.sample_rate)

    def blocks(self) -> Iterator[np.ndarray]:
        # Every frame → planar float32 (channels, n) at the native rate and layout (no resampling here).
        converter = av.AudioResampler(format="fltp")
        try:
            for frame in self._container.decode(self._stream):
                for converted in converter.resample(frame):
                    yield _downmix(converted.to_ndarray(), channel_axis=0)
            for converted in converter.resample(None):
                yield _downmix(converted.to_ndarray(), channel_axis=0)
        except av.error.FFmpegError as exc:
            raise AudioError(self.name, f"decoding failed (corrupt data?): {exc}") from exc

    def close(self) -> None:
        self._container.close()


def _source_name(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if _is_array(source):
        return "<array>"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else "<file object>"


def _opener(source: object, name: str) -> Callable[[], Union[str, BinaryIO]]:
    """Validate an encoded source and return a function that gives a fresh handle to it at its start."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(name, "file not found")
        if path.is_dir():
            raise AudioError(name, "is a directory, not an audio file")
        if path.stat().st_size == 0:
            raise AudioError(name, "file is empty (0 bytes)")
        return lambda: str(path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise AudioError(name, "no data (0 bytes)")
        return lambda: io.BytesIO(data)
    if hasattr(source, "read"):
        stream: BinaryIO = source  # type: ignore[assignment]
        if not (hasattr(stream, "seekable") and stream.seekable()):
            return _opener(stream.read(), name)  # unseekable: buffer it (decoders need to seek)
        start = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        if end == start:
            raise AudioError(name, "no data (0 bytes)")

        def rewind() -> BinaryIO:
            stream.seek(start)
            return stream

        return rewind
    raise TypeError(f"unsupported audio source type: {type(source).__name__}")


def _open(source: object) -> _Decoder:
    """Open an encoded source with soundfile, else PyAV; raise AudioError if neither can read it."""
    name = _source_name(source)
    open_handle = _opener(source, name)
    try:
        return _SoundfileDecoder(name, sf.SoundFile(open_handle()))
    except (sf.SoundFileError, RuntimeError) as exc:
        soundfile_error = exc
    try:
        container = av.open(open_handle(), mode="r")
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioError(
            name, f"not a readable audio file (soundfile: {soundfile_error}; FFmpeg: {exc})"
        ) from exc
    return _PyAVDecoder(name, container)


# ---------------------------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------------------------


def _is_array(source: object) -> bool:
    return isinstance(source, (np.ndarray, torch.Tensor))


def _array_to_mono(source: Union[np.ndarray, torch.Tensor], name: str) -> np.ndarray:
    """Decoded samples → mono float32. Integer PCM is scaled to [-1, 1) (int16 / 2**15, int32 / 2**31)."""
    if isinstance(source, torch.Tensor):
        source = source.detach().to("cpu")
        if source.is_floating_point() and source.dtype != torch.float64:
            source = source.to(torch.float32)
        source = source.numpy()
    samples = np.asarray(source)
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / np.float32(2**15)
    elif samples.dtype == np.int32:
        samples = (samples.astype(np.float64) / 2**31).astype(np.float32)
    elif np.issubdtype(samples.dtype, np.floating):
        samples = samples.astype(np.float32, copy=False)
    else:
        raise AudioError(name, f"unsupported sample type {samples.dtype} (use float, int16 or int32)")
    if samples.ndim == 1:
        return samples
    if samples.ndim == 2:
        rows, cols = samples.shape
        if rows <= MAX_CHANNELS and rows <= cols:
            return _downmix(samples, channel_axis=0)
        if cols <= MAX_CHANNELS:
            return _downmix(samples, channel_axis=1)
    raise AudioError(
        name, f"expected 1-D samples or a (channels, samples) array with at most {MAX_CHANNELS} channels, "
        f"got shape {samples.shape}"
    )


# ---------------------------------------------------------------------------------------------------------
# Checks and resampling
# ---------------------------------------------------------------------------------------------------------


def _min_samples(sample_rate: int) -> int:
    """One fbank window (25 ms) at ``sample_rate``."""
    return -(-FRAME_LENGTH * sample_rate // SAMPLE_RATE)


def _check_length(name: str, num_samples: int, sample_rate: int) -> None:
    if num_samples == 0:
        raise AudioError(name, "audio is empty (0 samples)")
    if num_samples < _min_samples(sample_rate):
        raise AudioError(
            name,
            f"audio is {num_samples / sample_rate:.3f} s long; "
            f"at least {FRAME_LENGTH / SAMPLE_RATE:.3f} s is needed",
        )


def _check_finite(name: str, samples: np.ndarray) -> None:
    if not np.isfinite(samples).all():
        raise AudioError(name, "contains NaN or infinite samples")


def _check_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")


def _resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return samples
    resampled = soxr.resample(samples, from_rate, to_rate, quality=_RESAMPLE_QUALITY)
    return resampled.astype(np.float32, copy=False)


def _resample_stream(blocks: Iterable[np.ndarray], from_rate: int, to_rate: int) -> Iterator[np.ndarray]:
    if from_rate == to_rate:
        yield from blocks
        return
    stream = soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32", quality=_RESAMPLE_QUALITY)
    for block in blocks:
        yield stream.resample_chunk(block, last=False)
    yield stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def _rechunk(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup blocks into arrays of exactly ``size`` samples; the last one may be shorter."""
    pending: list[np.ndarray] = []
    pending_len = 0
    for block in blocks:
        pending.append(block)
        pending_len += block.shape[0]
        if pending_len < size:
            continue
        joined = np.concatenate(pending)
        cut = (joined.shape[0] // size) * size
        yield from np.split(joined[:cut], cut // size)
        pending, pending_len = [joined[cut:]], joined.shape[0] - cut
    if pending_len:
        yield np.concatenate(pending)


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------


def load_audio(
    source: AudioSource, *, sample_rate: int = SAMPLE_RATE, source_rate: Optional[int] = None
) -> np.ndarray:
    """Load ``source`` as a mono float32 waveform in [-1, 1] at ``sample_rate`` (default 16 kHz).

    ``source`` may be:

    - a path (``str`` / ``os.PathLike``), encoded bytes, or a binary file object (read from its current
      position): any format soundfile or FFmpeg can decode; multi-channel audio is averaged; other rates
      are resampled with soxr;
    - a numpy array or torch tensor of decoded samples, 1-D, or 2-D ``(channels, samples)`` with at most
      8 channels (a ``(samples, channels)`` array is also recognised, since the channel axis is the short
      one). Floats are taken as they are; int16/int32 PCM is scaled to [-1, 1). The array is assumed to be
      at ``source_rate``, which defaults to ``sample_rate`` (no resampling).

    Float files are not clipped. Raises :class:`~mooer.errors.AudioError` for a missing, empty, unreadable
    or corrupt source, non-finite samples, and audio shorter than one 25 ms fbank window.
    """
    _check_rate(sample_rate)
    name = _source_name(source)
    if _is_array(source):
        native_rate = sample_rate if source_rate is None else source_rate
        _check_rate(native_rate)
        samples = _array_to_mono(source, name)  # type: ignore[arg-type]
    else:
        with _open(source) as decoder:
            native_rate = decoder.sample_rate
            blocks = list(decoder.blocks())
        samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    _check_length(name, samples.shape[0], native_rate)
    _check_finite(name, samples)
    samples = _resample(samples, native_rate, sample_rate)
    _check_length(name, samples.shape[0], sample_rate)
    return samples


def audio_info(source: AudioSource, *, source_rate: int = SAMPLE_RATE) -> AudioInfo:
    """Duration, native sample rate, channel count and frame count of ``source``, from the header.

    Nothing is decoded unless a compressed container has no duration in its header. For arrays,
    ``source_rate`` is the rate they are at (default 16 kHz).
    """
    if _is_array(source):
        _check_rate(source_rate)
        shape = tuple(source.shape)  # type: ignore[union-attr]
        mono = _array_to_mono(source, _source_name(source))  # type: ignore[arg-type]
        channels = 1 if len(shape) == 1 else int(np.prod(shape)) // mono.shape[0]
        return AudioInfo(mono.shape[0] / source_rate, source_rate, channels, mono.shape[0])
    with _open(source) as decoder:
        num_frames = decoder.num_frames
        if num_frames is None:
            num_frames = sum(block.shape[0] for block in decoder.blocks())
        return AudioInfo(num_frames / decoder.sample_rate, decoder.sample_rate, decoder.channels, num_frames)


def iter_audio_chunks(
    source: AudioSource, chunk_seconds: float, *, sample_rate: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
    """Stream ``source`` as consecutive mono float32 chunks of ``chunk_seconds`` at ``sample_rate``.

    Only a few blocks are held in memory at a time (soundfile blocks, or the PyAV decode loop feeding a
    streaming soxr resampler). Every chunk has ``round(chunk_seconds * sample_rate)`` samples except the last,
    which may be shorter. Their concatenation equals :func:`load_audio` exactly when no resampling is
    needed, and to within resampler edge effects when it is.

    Array sources are taken to be at ``sample_rate`` already. The source is opened (and missing/unreadable
    files are reported) when this function is called; decoding errors and a too-short total length are
    raised while iterating. Truncated compressed files yield whatever FFmpeg/libsndfile can decode.
    """
    _check_rate(sample_rate)
    chunk_size = round(chunk_seconds * sample_rate)
    if chunk_size < 1:
        raise ValueError(f"chunk_seconds must give at least one sample, got {chunk_seconds!r}")
    if _is_array(source):
        samples = load_audio(source, sample_rate=sample_rate)
        return iter(np.split(samples, range(chunk_size, samples.shape[0], chunk_size)))
    decoder = _open(source)
    return _stream_chunks(decoder, chunk_size, sample_rate)


def _stream_chunks(decoder: _Decoder, chunk_size: int, sample_rate: int) -> Iterator[np.ndarray]:
    with decoder:
        total = 0
        blocks = _resample_stream(decoder.blocks(), decoder.sample_rate, sample_rate)
        for chunk in _rechunk(blocks, chunk_size):
            _check_finite(decoder.name, chunk)
            if total == 0 and chunk.shape[0] < chunk_size:  # the whole audio fits in one (short) chunk
                _check_length(decoder.name, chunk.shape[0], sample_rate)
            total += chunk.shape[0]
            yield chunk
        _check_length(decoder.name, total, sample_rate)


MEDIA_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aac", ".wma", ".webm", ".mp4",
                              ".mkv", ".mov"})
"""File extensions a directory input is searched for (``mooer transcribe DIR``, ``mooer pseudo-label DIR``)."""


def find_audio_files(directory: Union[str, os.PathLike]) -> list[tuple[str, str]]:
    """``(key, path)`` of every audio/video file below ``directory``, sorted by path; the key is the path
    relative to ``directory`` without its extension, ``/`` replaced by ``_``."""
    root = Path(directory)
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in MEDIA_EXTENSIONS and p.is_file())
    return [(str(p.relative_to(root).with_suffix("")).replace("/", "_"), str(p)) for p in found]
