"""Audio loading: a file, bytes, a stream or an array → mono float32 waveform in [-1, 1] at 16 kHz.

Decoding: soundfile (libsndfile: WAV, FLAC, OGG Vorbis/Opus, AIFF, …) is tried first; it reads 16-bit
PCM as exactly ``int16 / 32768``, which the reference fixtures require. Whatever it cannot open (M4A/AAC,
WebM, video containers' audio tracks, …) and MPEG audio (below) are decoded by PyAV (FFmpeg), first audio
stream. Paths must be regular files: a FIFO or device is refused, not read (decoders probe and seek).

Channels are averaged in float32 (as the official inference path does), then the mono signal is resampled
with soxr (quality ``HQ``) when its rate differs from the requested one. Averaging before resampling is
equivalent (both are linear) and cheaper.

MPEG audio (``.mp1/.mp2/.mp3``, an ID3 tag or an MPEG frame header at the start, MPEG data in a WAV) goes
straight to FFmpeg: libsndfile decodes it with mpg123, which writes notes naming no file to the process's
stderr and gives up at the first damaged frame, where FFmpeg drops the damaged packet and goes on (with a
warning naming the file).

Every failure (missing file, not a regular file, empty or non-audio content, an encoding no decoder
reads, corrupt data, audio shorter than one 25 ms fbank window) raises :class:`mooer.errors.AudioError`
naming the source and the reason; whatever else a decoder, the resampler or numpy raises while reading a
source is turned into one too, so callers have one exception to handle per input.
"""

from __future__ import annotations

import abc
import contextlib
import io
import logging
import os
import stat
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable, Iterator, Optional, Union

import numpy as np
import torch

from mooer.errors import AudioError
from mooer.features import FRAME_LENGTH, SAMPLE_RATE

if TYPE_CHECKING:  # names for annotations only: PyAV, soundfile and soxr are imported when audio is read
    import av
    import soundfile as sf

__all__ = [
    "SAMPLE_RATE",
    "AudioSource",
    "AudioInfo",
    "load_audio",
    "load_audio_segment",
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
_HEAD_BYTES = 4096  # read from the start of a source to tell MPEG and WAV headers

_DAMAGED = "decoding failed: damaged or truncated data"

logger = logging.getLogger("mooer.audio")


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


def _library_reason(exc: BaseException) -> str:
    """What a decoder library said, without the file name and errno it repeats ("Invalid data found ...")."""
    import av.error
    import soundfile as sf

    if isinstance(exc, sf.LibsndfileError):
        return exc.error_string.strip().rstrip(".")
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror).strip().rstrip(".")
    if isinstance(exc, (sf.SoundFileError, av.error.FFmpegError)):
        return str(exc).strip().rstrip(".")
    return f"{type(exc).__name__}: {exc}"


class _SoundfileDecoder(_Decoder):
    def __init__(self, name: str, file: sf.SoundFile) -> None:
        self.name = name
        self._file = file
        self.sample_rate = file.samplerate
        self.channels = file.channels
        if self.sample_rate <= 0 or self.channels <= 0:
            file.close()
            raise ValueError(f"{self.sample_rate} Hz, {self.channels} channels")
        self.seekable = file.seekable()
        self.num_frames = file.frames if self.seekable else None

    def blocks(self) -> Iterator[np.ndarray]:
        try:
            while True:
                block = self._file.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    return
                yield _downmix(block, channel_axis=1)
        except Exception as exc:  # noqa: BLE001 - libsndfile and its codecs fail in many ways on bad data
            raise AudioError(self.name, _DAMAGED, _library_reason(exc)) from exc

    def read_range(self, first: int, count: int) -> np.ndarray:
        """Mono samples ``[first, first + count)`` (``count`` -1: to the end), seeking past the others."""
        try:
            self._file.seek(min(first, self._file.frames))
            block = self._file.read(count, dtype="float32", always_2d=True)
        except Exception as exc:  # noqa: BLE001 - as in blocks()
            raise AudioError(self.name, _DAMAGED, _library_reason(exc)) from exc
        return _downmix(block, channel_axis=1)

    def close(self) -> None:
        self._file.close()


class _PyAVDecoder(_Decoder):
    def __init__(self, name: str, container: av.container.InputContainer, failures: list[str],
                 wav: Optional["_WavFormat"]) -> None:
        self.name = name
        self._container = container
        try:
            streams = container.streams.audio
            if not streams:
                raise AudioError(name, "contains no audio stream")
            self._stream = streams[0]
            context = self._stream.codec_context
            if context is None:  # PyAV gives no codec context when FFmpeg has no decoder for the codec
                if wav is not None:
                    raise AudioError(name, f"unsupported WAV encoding: {wav.encoding()}", "; ".join(failures))
                raise AudioError(name, "not a decodable audio file",
                                 "; ".join([*failures, "FFmpeg: no decoder for its audio codec"]))
            self.sample_rate = int(context.sample_rate or 0)
            self.channels = len(context.layout.channels) if context.layout else 0
            if self.sample_rate <= 0 or self.channels <= 0:
                header = [f"WAV header: {wav}"] if wav is not None else []
                raise AudioError(name, "not a decodable audio file", "; ".join(
                    [*header, *failures, "FFmpeg: audio stream has no sample rate or channel layout"]))
            self.num_frames = self._frames_from_duration()
        except BaseException:
            container.close()
            raise

    def _frames_from_duration(self) -> Optional[int]:
        import av

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
        # A packet the codec rejects is dropped and decoding goes on, as the ffmpeg tool does: a damaged
        # frame in an MP3 costs its 20-odd ms, not the recording.
        import av
        import av.error

        converter = av.AudioResampler(format="fltp")
        damaged = decoded = 0
        try:
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    damaged += 1
                    continue
                for frame in frames:
                    for converted in converter.resample(frame):
                        decoded += converted.samples
                        yield _downmix(converted.to_ndarray(), channel_axis=0)
            for converted in converter.resample(None):
                decoded += converted.samples
                yield _downmix(converted.to_ndarray(), channel_axis=0)
        except Exception as exc:  # noqa: BLE001 - FFmpeg errors, and PyAV's own on odd streams
            raise AudioError(self.name, _DAMAGED,
                             f"FFmpeg: {_library_reason(exc)}") from exc
        if damaged and not decoded:
            raise AudioError(self.name, _DAMAGED,
                             f"FFmpeg: all {damaged} packets hold invalid data")
        if damaged:
            logger.warning("%s: skipped %d damaged packet%s (invalid data)", self.name, damaged,
                           "" if damaged == 1 else "s")

    def close(self) -> None:
        self._container.close()


# ---------------------------------------------------------------------------------------------------------
# Headers: just enough to route MPEG audio and to say which WAV encoding no decoder reads
# ---------------------------------------------------------------------------------------------------------

_EXTENSIBLE = 0xFFFE
_KS_GUID_TAIL = uuid.UUID("00000000-0000-0010-8000-00aa00389b71").bytes_le[4:]  # KSDATAFORMAT_SUBTYPE_*
_WAV_TAGS = {0x0001: "PCM", 0x0002: "MS ADPCM", 0x0003: "IEEE float", 0x0006: "A-law", 0x0007: "mu-law",
             0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0040: "G.721 ADPCM", 0x0050: "MPEG",
             0x0055: "MPEG layer 3"}
_MPEG_WAV_TAGS = (0x0050, 0x0055)
_MPEG_SUFFIXES = (".mp1", ".mp2", ".mp3", ".mpga")  # libsndfile picks mpg123 for these by name alone


@dataclass(frozen=True)
class _WavFormat:
    """The ``fmt `` chunk of a WAV header (for routing and error messages; the decoders parse it again)."""

    tag: int
    channels: int
    rate: int
    bits: int
    sub_format: Optional[bytes]  # the GUID of WAVE_FORMAT_EXTENSIBLE

    @property
    def codec_tag(self) -> Optional[int]:
        """The format tag, or for EXTENSIBLE the tag its sub-format GUID stands for (None if none)."""
        if self.tag != _EXTENSIBLE:
            return self.tag
        if self.sub_format is not None and self.sub_format[4:] == _KS_GUID_TAIL:
            return struct.unpack("<I", self.sub_format[:4])[0]
        return None

    def encoding(self) -> str:
        if self.tag == _EXTENSIBLE:
            guid = uuid.UUID(bytes_le=self.sub_format) if self.sub_format is not None else "(missing)"
            known = _WAV_TAGS.get(self.codec_tag) if self.codec_tag is not None else None
            return f"WAVE_FORMAT_EXTENSIBLE sub-format {guid}{f' = {known}' if known else ''}, " \
                   f"{self.bits} bits per sample"
        name = _WAV_TAGS.get(self.tag)
        if name is None:
            return f"format tag 0x{self.tag:04X}, {self.bits} bits per sample"
        return f"{name}, {self.bits} bits per sample, format tag 0x{self.tag:04X}"

    def __str__(self) -> str:
        return f"{self.encoding()}, {self.channels} channel{'' if self.channels == 1 else 's'}, {self.rate} Hz"


def _wav_format(head: bytes) -> Optional[_WavFormat]:
    """The ``fmt `` chunk of a RIFF/RIFX/RF64 WAVE file starting with ``head``; None if none is there."""
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
        return None
    order = ">" if head[:4] == b"RIFX" else "<"
    pos = 12
    while pos + 8 <= len(head):
        (size,) = struct.unpack(order + "I", head[pos + 4 : pos + 8])
        if head[pos : pos + 4] == b"fmt ":
            body = head[pos + 8 : pos + 8 + min(size, 40)]
            if len(body) < 16:
                return None
            tag, channels, rate, _, _, bits = struct.unpack(order + "HHIIHH", body[:16])
            sub_format = body[24:40] if tag == _EXTENSIBLE and len(body) >= 40 else None
            return _WavFormat(tag, channels, rate, bits, sub_format)
        pos += 8 + size + (size & 1)
    return None


def _is_mpeg(head: bytes, suffix: str, wav: Optional[_WavFormat]) -> bool:
    """Whether libsndfile would decode this source with mpg123 (by name, ID3 tag, frame sync or WAV tag)."""
    if suffix in _MPEG_SUFFIXES or head.startswith(b"ID3"):
        return True
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return True
    return wav is not None and wav.codec_tag in _MPEG_WAV_TAGS


# ---------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------


def _source_name(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if _is_array(source):
        return "<array>"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else "<file object>"


def _check_source(source: object) -> None:
    """A TypeError (the caller's mistake, not the input's) for what no decoder takes."""
    if not (isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)) or _is_array(source)
            or hasattr(source, "read")):
        raise TypeError(f"unsupported audio source type: {type(source).__name__}")


_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


@dataclass
class _Encoded:
    """A validated encoded source: a function giving a fresh handle at its start, and its first bytes."""

    open: Callable[[], Union[str, BinaryIO]]
    head: bytes
    suffix: str  # lower-case file extension ("" if unknown)


def _encoded(source: object, name: str) -> _Encoded:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise AudioError(name, "file not found") from None
        except OSError as exc:
            raise AudioError(name, f"cannot be read: {exc.strerror or exc}") from exc
        if stat.S_ISDIR(info.st_mode):
            raise AudioError(name, "is a directory, not an audio file")
        if not stat.S_ISREG(info.st_mode):  # decoders probe and seek; a pipe would block or lose data
            kind = next((what for test, what in _FILE_KINDS if test(info.st_mode)), "not a regular file")
            raise AudioError(name, f"is {kind}, not a regular file: only files can be probed and seeked "
                                   "(pass a stream's contents as bytes or a file object instead)")
        if info.st_size == 0:
            raise AudioError(name, "file is empty (0 bytes)")
        try:
            with open(path, "rb") as handle:
                head = handle.read(_HEAD_BYTES)
        except OSError as exc:
            raise AudioError(name, f"cannot be read: {exc.strerror or exc}") from exc
        return _Encoded(lambda: path, head, Path(path).suffix.lower())
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise AudioError(name, "no data (0 bytes)")
        return _Encoded(lambda: io.BytesIO(data), data[:_HEAD_BYTES], "")
    stream: BinaryIO = source  # type: ignore[assignment]
    suffix = Path(name).suffix.lower() if not name.startswith("<") else ""
    try:
        if not (hasattr(stream, "seekable") and stream.seekable()):
            return _encoded(stream.read(), name)  # unseekable: buffer it (decoders need to seek)
        start = stream.tell()
        head = stream.read(_HEAD_BYTES)
        end = stream.seek(0, io.SEEK_END)
        stream.seek(start)
    except OSError as exc:
        raise AudioError(name, f"cannot be read: {exc}") from exc
    if end == start:
        raise AudioError(name, "no data (0 bytes)")

    def rewind() -> BinaryIO:
        stream.seek(start)
        return stream

    return _Encoded(rewind, head, suffix)


def _open(source: object, name: str) -> _Decoder:
    """Open an encoded source with soundfile, else PyAV; raise AudioError if neither can read it."""
    import av
    import soundfile as sf

    encoded = _encoded(source, name)
    wav = _wav_format(encoded.head)
    failures: list[str] = []
    if not _is_mpeg(encoded.head, encoded.suffix, wav):
        try:
            return _SoundfileDecoder(name, sf.SoundFile(encoded.open()))
        except Exception as exc:  # noqa: BLE001 - whatever libsndfile cannot read goes to FFmpeg
            failures.append(f"soundfile: {_library_reason(exc)}")
    try:
        container = av.open(encoded.open(), mode="r")
    except Exception as exc:  # noqa: BLE001 - the last decoder: its failure is the source's
        header = [f"WAV header: {wav}"] if wav is not None else []
        raise AudioError(name, "not a decodable audio file",
                         "; ".join([*header, *failures, f"FFmpeg: {_library_reason(exc)}"])) from exc
    return _PyAVDecoder(name, container, failures, wav)


@contextlib.contextmanager
def _named_failures(name: str) -> Iterator[None]:
    """Whatever a decoder, the resampler or numpy raises for this source becomes an AudioError naming it.

    Library exceptions are many and undocumented (AttributeError from a stream without a codec, MemoryError
    from a lying header, ...); callers handle one type per input. KeyboardInterrupt and SystemExit pass.
    """
    try:
        yield
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - see above
        raise AudioError(name, "decoding failed", f"{type(exc).__name__}: {exc}") from exc


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
    import soxr

    resampled = soxr.resample(samples, from_rate, to_rate, quality=_RESAMPLE_QUALITY)
    return resampled.astype(np.float32, copy=False)


def _resample_stream(blocks: Iterable[np.ndarray], from_rate: int, to_rate: int) -> Iterator[np.ndarray]:
    if from_rate == to_rate:
        yield from blocks
        return
    import soxr

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
    source: AudioSource, *, sample_rate: int = SAMPLE_RATE, source_rate: Optional[int] = None,
    name: Optional[str] = None,
) -> np.ndarray:
    """Load ``source`` as a mono float32 waveform in [-1, 1] at ``sample_rate`` (default 16 kHz).

    ``source`` may be:

    - a path (``str`` / ``os.PathLike``) to a regular file, encoded bytes, or a binary file object (read
      from its current position): any format soundfile or FFmpeg can decode; multi-channel audio is
      averaged; other rates are resampled with soxr;
    - a numpy array or torch tensor of decoded samples, 1-D, or 2-D ``(channels, samples)`` with at most
      8 channels (a ``(samples, channels)`` array is also recognised, since the channel axis is the short
      one). Floats are taken as they are; int16/int32 PCM is scaled to [-1, 1). The array is assumed to be
      at ``source_rate``, which defaults to ``sample_rate`` (no resampling).

    ``name`` names the source in errors (default: the path, else ``<bytes>``, ``<array>``, ...).
    Float files are not clipped. Raises :class:`~mooer.errors.AudioError` for a missing, empty, unreadable
    or corrupt source, non-finite samples, and audio shorter than one 25 ms fbank window; ``TypeError`` for
    a source of an unsupported type.
    """
    _check_rate(sample_rate)
    _check_source(source)
    name = name or _source_name(source)
    with _named_failures(name):
        if _is_array(source):
            native_rate = sample_rate if source_rate is None else source_rate
            _check_rate(native_rate)
            samples = _array_to_mono(source, name)  # type: ignore[arg-type]
        else:
            with _open(source, name) as decoder:
                native_rate = decoder.sample_rate
                blocks = list(decoder.blocks())
            samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
        return _finish(name, samples, native_rate, sample_rate)


def _finish(name: str, samples: np.ndarray, native_rate: int, sample_rate: int) -> np.ndarray:
    """Check length and values at the native rate, resample, check the length again."""
    _check_length(name, samples.shape[0], native_rate)
    _check_finite(name, samples)
    samples = _resample(samples, native_rate, sample_rate)
    _check_length(name, samples.shape[0], sample_rate)
    return samples


def load_audio_segment(
    source: AudioSource, start: float, end: Optional[float] = None, *, sample_rate: int = SAMPLE_RATE,
    name: Optional[str] = None,
) -> np.ndarray:
    """The ``[start, end)`` seconds of an encoded ``source`` (``end`` None: to the end), like :func:`load_audio`.

    Formats libsndfile reads are seeked and only the segment is decoded: samples ``[int(start·sr),
    int(end·sr))`` at the file's native rate ``sr``, then averaged and resampled. Others (MP3, M4A, ...) are
    decoded whole at ``sample_rate`` and cut there. An empty or too short segment is an AudioError.
    """
    _check_rate(sample_rate)
    _check_source(source)
    if _is_array(source):
        raise TypeError("load_audio_segment takes encoded audio; slice an array directly")
    name = name or _source_name(source)
    with _named_failures(name):
        with _open(source, name) as decoder:
            if isinstance(decoder, _SoundfileDecoder) and decoder.seekable:
                native = decoder.sample_rate
                first = int(start * native)
                count = -1 if end is None else max(0, int(end * native) - first)
                samples = decoder.read_range(first, count)
                if samples.shape[0] == 0:
                    raise AudioError(name, f"segment [{start}, {end}) s is empty")
                return _finish(name, samples, native, sample_rate)
            native = decoder.sample_rate
            blocks = list(decoder.blocks())
        whole = _finish(name, np.concatenate(blocks) if blocks else np.zeros(0, np.float32), native, sample_rate)
        cut = whole[int(start * sample_rate) : None if end is None else int(end * sample_rate)]
        _check_length(name, cut.shape[0], sample_rate)
        return cut


def audio_info(source: AudioSource, *, source_rate: int = SAMPLE_RATE, name: Optional[str] = None) -> AudioInfo:
    """Duration, native sample rate, channel count and frame count of ``source``, from the header.

    Nothing is decoded unless a compressed container has no duration in its header. For arrays,
    ``source_rate`` is the rate they are at (default 16 kHz). Errors as :func:`load_audio`.
    """
    _check_source(source)
    name = name or _source_name(source)
    with _named_failures(name):
        if _is_array(source):
            _check_rate(source_rate)
            shape = tuple(source.shape)  # type: ignore[union-attr]
            mono = _array_to_mono(source, name)  # type: ignore[arg-type]
            channels = 1 if len(shape) == 1 else int(np.prod(shape)) // mono.shape[0]
            return AudioInfo(mono.shape[0] / source_rate, source_rate, channels, mono.shape[0])
        with _open(source, name) as decoder:
            num_frames = decoder.num_frames
            if num_frames is None:
                num_frames = sum(block.shape[0] for block in decoder.blocks())
            return AudioInfo(num_frames / decoder.sample_rate, decoder.sample_rate, decoder.channels, num_frames)


def iter_audio_chunks(
    source: AudioSource, chunk_seconds: float, *, sample_rate: int = SAMPLE_RATE, name: Optional[str] = None
) -> Iterator[np.ndarray]:
    """Stream ``source`` as consecutive mono float32 chunks of ``chunk_seconds`` at ``sample_rate``.

    Only a few blocks are held in memory at a time (soundfile blocks, or the PyAV decode loop feeding a
    streaming soxr resampler). Every chunk has ``round(chunk_seconds * sample_rate)`` samples except the last,
    which may be shorter. Their concatenation equals :func:`load_audio` exactly when no resampling is
    needed, and to within resampler edge effects when it is.

    Array sources are taken to be at ``sample_rate`` already. The source is opened (and missing/unreadable
    files are reported) when this function is called; decoding errors and a too-short total length are
    raised while iterating, all as AudioError. Truncated compressed files yield whatever FFmpeg/libsndfile
    can decode.
    """
    _check_rate(sample_rate)
    _check_source(source)
    chunk_size = round(chunk_seconds * sample_rate)
    if chunk_size < 1:
        raise ValueError(f"chunk_seconds must give at least one sample, got {chunk_seconds!r}")
    name = name or _source_name(source)
    if _is_array(source):
        samples = load_audio(source, sample_rate=sample_rate, name=name)
        return iter(np.split(samples, range(chunk_size, samples.shape[0], chunk_size)))
    with _named_failures(name):
        decoder = _open(source, name)
    return _stream_chunks(decoder, chunk_size, sample_rate)


def _stream_chunks(decoder: _Decoder, chunk_size: int, sample_rate: int) -> Iterator[np.ndarray]:
    with decoder, _named_failures(decoder.name):
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
