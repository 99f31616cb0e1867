"""A corpus of well-formed and malformed audio files, made byte by byte (``struct``) in a test's folder.

Every WAV format tag and sample type, WAVE_FORMAT_EXTENSIBLE headers with known and unknown sub-formats,
truncated and lying headers, containers without an audio stream, and non-audio bytes under audio
extensions. Each :class:`Case` says what decoding it must give:

- ``expected`` set: it decodes (at 16 kHz, so nothing is resampled) to exactly these samples (within ``atol``);
- ``tone`` set (lossy codecs): it decodes to the 440 Hz tone, about as long and as loud as written;
- ``error`` set: it raises :class:`mooer.errors.AudioError` whose message contains this text;
- none of these: either outcome is correct (what a decoder makes of garbage in a real codec), but no other.

The audio is a 0.5 s, 440 Hz tone at 16 kHz, long enough for the model's smallest input.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

RATE = 16_000
N = RATE // 2

PCM, ADPCM_MS, IEEE_FLOAT, ALAW, MULAW, ADPCM_IMA, GSM610, G721, MPEG3, EXTENSIBLE = (
    0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0x0055, 0xFFFE)


@dataclass
class Case:
    name: str  # file name (the extension matters to some decoders)
    what: str  # one line for reports
    data: Optional[bytes]  # None: made by ``make`` (containers written with PyAV, a FIFO, ...)
    expected: Optional[np.ndarray] = None
    atol: float = 0.0
    tone: bool = False
    error: Optional[str] = None


def tone(n: int = N) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(n) / RATE)).astype(np.float64)


# ------------------------------------------------------------------------------------------ RIFF/WAVE
def chunk(tag: bytes, payload: bytes, size: Optional[int] = None) -> bytes:
    """A RIFF chunk; ``size`` overrides the declared length (a lying header). Odd payloads are padded."""
    declared = len(payload) if size is None else size
    return tag + struct.pack("<I", declared) + payload + (b"\0" if len(payload) % 2 else b"")


def fmt(tag: int, channels: int, rate: int, bits: int, *, block_align: Optional[int] = None,
        extra: Optional[bytes] = None) -> bytes:
    """A ``fmt `` chunk payload (WAVEFORMATEX when ``extra`` is given: cbSize + extra bytes)."""
    align = block_align if block_align is not None else channels * max(bits, 8) // 8
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * align & 0xFFFFFFFF, align & 0xFFFF, bits)
    if extra is not None:
        body += struct.pack("<H", len(extra)) + extra
    return body


def ks_guid(tag: int) -> bytes:
    """The KSDATAFORMAT_SUBTYPE GUID of a format tag: {tag-0000-0010-8000-00AA00389B71}."""
    return uuid.UUID(f"{tag:08x}-0000-0010-8000-00aa00389b71").bytes_le


def extensible(channels: int, rate: int, bits: int, valid_bits: int, sub_format: bytes) -> bytes:
    align = channels * bits // 8
    return fmt(EXTENSIBLE, channels, rate, bits, block_align=align,
               extra=struct.pack("<HI", valid_bits, 0) + sub_format)


def wav(fmt_payload: bytes, data: bytes, *, data_size: Optional[int] = None, riff_size: Optional[int] = None,
        before: bytes = b"", fmt_size: Optional[int] = None) -> bytes:
    body = b"WAVE" + before + chunk(b"fmt ", fmt_payload, fmt_size) + chunk(b"data", data, data_size)
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def pcm16(x: np.ndarray) -> np.ndarray:
    return np.round(x * 32767).astype("<i2")


# ---------------------------------------------------------------------------------------------- G.711
def ulaw_decode(codes: np.ndarray) -> np.ndarray:
    """ITU-T G.711 mu-law code → linear sample / 32768 (the standard expansion, independent of any decoder)."""
    u = ~codes.astype(np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 7, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (np.where(u & 0x80, -magnitude, magnitude) / 32768).astype(np.float32)


def alaw_decode(codes: np.ndarray) -> np.ndarray:
    """ITU-T G.711 A-law code → linear sample / 32768."""
    a = codes.astype(np.int32) ^ 0x55
    exponent, mantissa = (a >> 4) & 7, a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return (np.where(a & 0x80, magnitude, -magnitude) / 32768).astype(np.float32)


# ---------------------------------------------------------------------------------------------- cases
def wav_cases() -> list[Case]:
    x = tone()
    s16 = pcm16(x)
    f32 = x.astype(np.float32)
    exact16 = s16.astype(np.float32) / 32768
    u8 = (np.round(x * 127) + 128).astype(np.uint8)
    s24 = np.round(x * (2**23 - 1)).astype(np.int32)
    s24_bytes = (s24.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]).tobytes()
    s32 = np.round(x * (2**31 - 1)).astype("<i4")
    codes = np.resize(np.arange(256, dtype=np.uint8), N)  # every G.711 code
    stereo = np.stack([s16, pcm16(-0.5 * x)], axis=1)
    rng = np.random.default_rng(22)
    junk = rng.bytes(N)
    cases = [
        # --- sample types that decode
        Case("pcm_u8.wav", "PCM 8-bit unsigned", wav(fmt(PCM, 1, RATE, 8), u8.tobytes()),
             (u8.astype(np.float32) - 128) / 128),
        Case("pcm_s16.wav", "PCM 16-bit", wav(fmt(PCM, 1, RATE, 16), s16.tobytes()), exact16),
        Case("pcm_s24.wav", "PCM 24-bit", wav(fmt(PCM, 1, RATE, 24), s24_bytes), (s24 / 2**23).astype(np.float32)),
        Case("pcm_s32.wav", "PCM 32-bit", wav(fmt(PCM, 1, RATE, 32), s32.tobytes()),
             (s32 / 2**31).astype(np.float32), atol=1e-7),
        Case("float32.wav", "IEEE float 32-bit", wav(fmt(IEEE_FLOAT, 1, RATE, 32), f32.astype("<f4").tobytes()), f32),
        Case("float64.wav", "IEEE float 64-bit", wav(fmt(IEEE_FLOAT, 1, RATE, 64), x.astype("<f8").tobytes()), f32),
        Case("alaw.wav", "G.711 A-law", wav(fmt(ALAW, 1, RATE, 8), codes.tobytes()), alaw_decode(codes)),
        Case("mulaw.wav", "G.711 mu-law", wav(fmt(MULAW, 1, RATE, 8), codes.tobytes()), ulaw_decode(codes)),
        Case("stereo_s16.wav", "PCM 16-bit stereo (averaged)", wav(fmt(PCM, 2, RATE, 16), stereo.tobytes()),
             (stereo.astype(np.float32) / 32768).mean(axis=1, dtype=np.float32)),
        Case("rifx_s16.wav", "big-endian RIFX PCM 16-bit",
             _rifx(s16), exact16),
        Case("ext_pcm16.wav", "EXTENSIBLE, PCM sub-format",
             wav(extensible(1, RATE, 16, 16, ks_guid(PCM)), s16.tobytes()), exact16),
        Case("ext_float32.wav", "EXTENSIBLE, IEEE float sub-format",
             wav(extensible(1, RATE, 32, 32, ks_guid(IEEE_FLOAT)), f32.astype("<f4").tobytes()), f32),
        Case("ext_pcm24in32.wav", "EXTENSIBLE, 24 valid bits in 32-bit containers",
             wav(extensible(1, RATE, 32, 24, ks_guid(PCM)), (s24.astype("<i4") << 8).tobytes()),
             (s24 / 2**23).astype(np.float32)),
        # --- harmless lies and oddities that decode
        Case("riff_size_zero.wav", "RIFF size 0 (a streaming writer's header)",
             wav(fmt(PCM, 1, RATE, 16), s16.tobytes(), riff_size=0), exact16),
        Case("riff_size_huge.wav", "RIFF size 0xFFFFFFFF",
             wav(fmt(PCM, 1, RATE, 16), s16.tobytes(), riff_size=0xFFFFFFFF), exact16),
        Case("data_size_past_end.wav", "data size larger than the file",
             wav(fmt(PCM, 1, RATE, 16), s16.tobytes(), data_size=10 * len(s16.tobytes())), exact16),
        Case("junk_chunk_first.wav", "a JUNK and a LIST chunk before fmt",
             wav(fmt(PCM, 1, RATE, 16), s16.tobytes(), before=chunk(b"JUNK", b"\0" * 28) + chunk(b"LIST", b"INFOxyz")),
             exact16),
        Case("odd_trailing_byte.wav", "odd data size (half a sample at the end)",
             wav(fmt(PCM, 1, RATE, 16), s16.tobytes() + b"\x7f"), exact16),
        # --- sample types no decoder here reads: an AudioError that says so
        Case("float16.wav", "IEEE float 16-bit", wav(fmt(IEEE_FLOAT, 1, RATE, 16), f32.astype("<f2").tobytes()),
             error="unsupported WAV encoding: IEEE float, 16 bits per sample, format tag 0x0003"),
        Case("unknown_tag.wav", "unknown format tag 0x1234", wav(fmt(0x1234, 1, RATE, 16), s16.tobytes()),
             error="unsupported WAV encoding: format tag 0x1234"),
        Case("ext_unknown_guid.wav", "EXTENSIBLE, unknown sub-format GUID",
             wav(extensible(1, RATE, 16, 16, bytes(range(16))), s16.tobytes()),
             error="unsupported WAV encoding: WAVE_FORMAT_EXTENSIBLE sub-format"),
        Case("ext_unknown_tag_guid.wav", "EXTENSIBLE, sub-format GUID of an unknown tag",
             wav(extensible(1, RATE, 16, 16, ks_guid(0x1234)), s16.tobytes()),
             error="unsupported WAV encoding: WAVE_FORMAT_EXTENSIBLE sub-format"),
        # --- ADPCM-ish tags with made-up payloads: a decoder may make noise of them or refuse
        Case("adpcm_ms_junk.wav", "MS ADPCM tag, no coefficient table, random payload",
             wav(fmt(ADPCM_MS, 1, RATE, 4, block_align=256), junk)),
        Case("adpcm_ima_junk.wav", "IMA ADPCM tag, random payload",
             wav(fmt(ADPCM_IMA, 1, RATE, 4, block_align=256, extra=struct.pack("<H", 505)), junk)),
        Case("gsm610_junk.wav", "GSM 6.10 tag, random payload",
             wav(fmt(GSM610, 1, RATE, 0, block_align=65, extra=struct.pack("<H", 320)), junk)),
        Case("g721_junk.wav", "G.721 ADPCM tag, random payload", wav(fmt(G721, 1, RATE, 4, block_align=1), junk)),
        Case("mpeg3_junk.wav", "MPEG layer 3 tag, random payload",
             wav(fmt(MPEG3, 1, RATE, 0, block_align=1, extra=bytes(12)), junk)),
        Case("bits12.wav", "PCM with 12 bits per sample", wav(fmt(PCM, 1, RATE, 12, block_align=2), s16.tobytes())),
        Case("block_align_wrong.wav", "PCM 16-bit with block align 3",
             wav(fmt(PCM, 1, RATE, 16, block_align=3), s16.tobytes())),
        # --- lying or truncated headers
        Case("zero_channels.wav", "0 channels", wav(fmt(PCM, 0, RATE, 16, block_align=2), s16.tobytes()),
             error="not a decodable audio file"),
        Case("zero_rate.wav", "sample rate 0", wav(fmt(PCM, 1, 0, 16), s16.tobytes()), error="not a decodable"),
        Case("huge_rate.wav", "sample rate 0xFFFFFFFF", wav(fmt(PCM, 1, 0xFFFFFFFF, 16), s16.tobytes()),
             error="not a decodable"),
        Case("rate_2e9.wav", "sample rate 2,000,000,000 (0.5 s of samples = 0.25 ms)",
             wav(fmt(PCM, 1, 2_000_000_000, 16), s16.tobytes()), error="audio is"),
        Case("channels_65535.wav", "65535 channels", wav(fmt(PCM, 65535, RATE, 16), s16.tobytes())),
        Case("bits_zero.wav", "0 bits per sample", wav(fmt(PCM, 1, RATE, 0, block_align=2), s16.tobytes())),
        Case("no_data_chunk.wav", "fmt chunk, no data chunk",
             b"RIFF" + struct.pack("<I", 4 + 8 + 16) + b"WAVE" + chunk(b"fmt ", fmt(PCM, 1, RATE, 16)),
             error="not a decodable"),
        Case("header_only.wav", "RIFF/WAVE and nothing else", b"RIFF\x04\0\0\0WAVE", error="not a decodable"),
        Case("cut_in_fmt.wav", "cut 20 bytes in, inside the fmt chunk",
             wav(fmt(PCM, 1, RATE, 16), s16.tobytes())[:20], error="not a decodable"),
        Case("cut_after_header.wav", "a header and 3 samples", wav(fmt(PCM, 1, RATE, 16), s16.tobytes())[:50],
             error="audio is"),
        Case("fmt_size_huge.wav", "fmt chunk size 0x7FFFFFF0",
             wav(fmt(PCM, 1, RATE, 16), s16.tobytes(), fmt_size=0x7FFFFFF0), error="not a decodable"),
        Case("data_size_zero.wav", "data size 0, samples after it",
             wav(fmt(PCM, 1, RATE, 16), s16.tobytes(), data_size=0)),
    ]
    return cases


def _rifx(s16: np.ndarray) -> bytes:
    """RIFX: RIFF/WAVE with big-endian sizes, fields and samples."""
    f = struct.pack(">HHIIHH", PCM, 1, RATE, RATE * 2, 2, 16)
    data = s16.astype(">i2").tobytes()
    body = b"WAVE" + b"fmt " + struct.pack(">I", len(f)) + f + b"data" + struct.pack(">I", len(data)) + data
    return b"RIFX" + struct.pack(">I", len(body)) + body


def other_cases() -> list[Case]:
    rng = np.random.default_rng(7)
    noise = rng.bytes(6000)
    text = "这不是音频 this is not audio\n".encode() * 40
    return [
        Case("empty.wav", "0 bytes", b"", error="(0 bytes)"),
        Case("text.wav", "a text file named .wav", text, error="not a decodable audio file"),
        Case("text.mp3", "a text file named .mp3", text, error="not a decodable audio file"),
        Case("random.wav", "random bytes named .wav", noise, error="not a decodable audio file"),
        Case("random.mp3", "random bytes named .mp3", noise, error="not a decodable audio file"),
        Case("random.flac", "random bytes named .flac", noise, error="not a decodable audio file"),
        Case("random.ogg", "random bytes named .ogg", noise, error="not a decodable audio file"),
        Case("random.m4a", "random bytes named .m4a", noise, error="not a decodable audio file"),
        Case("id3_then_noise.mp3", "an ID3v2 tag, then random bytes",
             b"ID3\x04\0\0\0\0\0\x0a" + bytes(10) + noise, error="not a decodable audio file"),
        Case("mpeg_sync_then_noise.mp3", "an MPEG frame sync word, then random bytes",
             b"\xff\xfb\x90\x64" + noise),
        Case("flac_magic_then_noise.flac", "fLaC, then random bytes", b"fLaC" + noise,
             error="not a decodable audio file"),
        Case("ogg_unknown_stream.ogg", "an Ogg page with an unknown codec", _ogg_page(b"\x01notacodec" + noise[:40]),
             error="not a decodable audio file"),
        Case("video_only.mp4", "an MP4 with a video stream and no audio", None, error="contains no audio stream"),
        Case("video_only.mkv", "a Matroska file with a video stream and no audio", None,
             error="contains no audio stream"),
        Case("tone.mp3", "an MP3 (FFmpeg's LAME encoder)", None, tone=True),
        Case("mp3_truncated.mp3", "the first 40 % of an MP3", None),
        Case("mp3_damaged.mp3", "an MP3 with 2 kB of random bytes in the middle", None),
        Case("ima_adpcm.wav", "IMA ADPCM (encoded by libsndfile)", None, tone=True),
        Case("ms_adpcm.wav", "MS ADPCM (encoded by libsndfile)", None, tone=True),
        Case("gsm610.wav", "GSM 6.10 (encoded by libsndfile)", None, tone=True),
    ]


def _ogg_page(payload: bytes) -> bytes:
    """One Ogg page (beginning of stream) holding ``payload``; the CRC is left 0 (a lying page)."""
    header = b"OggS" + struct.pack("<BBqIII", 0, 2, 0, 0x1234, 0, 0)
    return header + bytes([1, len(payload)]) + payload


def all_cases() -> list[Case]:
    return wav_cases() + other_cases()


def make(folder: Path, cases: Optional[list[Case]] = None) -> list[tuple[Case, Path]]:
    """Write every case into ``folder``; return (case, path) pairs."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for case in cases if cases is not None else all_cases():
        path = folder / case.name
        if case.data is not None:
            path.write_bytes(case.data)
        elif case.name.startswith("video_only"):
            _video_only(path, "mp4" if path.suffix == ".mp4" else "matroska")
        elif case.name.endswith(".mp3"):
            mp3 = _mp3(tone().astype(np.float32))
            if "truncated" in case.name:
                mp3 = mp3[: len(mp3) * 2 // 5]
            elif "damaged" in case.name:
                middle = len(mp3) // 2
                mp3 = mp3[:middle] + np.random.default_rng(3).bytes(2048) + mp3[middle + 2048:]
            path.write_bytes(mp3)
        else:
            subtype = {"ima_adpcm.wav": "IMA_ADPCM", "ms_adpcm.wav": "MS_ADPCM", "gsm610.wav": "GSM610"}[case.name]
            sf.write(path, tone().astype(np.float32), RATE, format="WAV", subtype=subtype)
        made.append((case, path))
    return made


def _mp3(samples: np.ndarray) -> bytes:
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()


def _video_only(path: Path, fmt_name: str) -> None:
    import av

    with av.open(str(path), "w", format=fmt_name) as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for _ in range(5):
            for packet in video.encode(black):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
