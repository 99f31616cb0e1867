"""Writing tar shards in the official format: :class:`ShardWriter`.

Kept apart from :mod:`mooer.data.shards` (the reader) because the writer produces a manifest, and the
manifest's audio loader reads shard members: reader ← manifest ← writer, no cycle.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Union

from mooer.audio import audio_info
from mooer.data.manifest import Utterance, split_audio_ref, write_manifest
from mooer.data.shards import AUDIO_EXTENSIONS, _forget, group_key, read_member
from mooer.errors import AudioError
from mooer.features import SAMPLE_RATE

__all__ = ["ShardWriter"]

logger = logging.getLogger("mooer.data")


class ShardWriter:
    """Pack utterances into tar shards of ``utts_per_shard`` utterances (the official layout).

    Each utterance becomes ``{id}.txt`` (its transcript) followed by ``{id}.{ext}``. Whole files in one of
    :data:`AUDIO_EXTENSIONS` (plain files or members of other shards) are copied byte for byte; segments
    (``start``/``end``) and other formats are decoded — resampled to 16 kHz mono — and stored as 16-bit
    WAV. Durations are measured here, once. Shards are ``{out_dir}/{prefix}_{i:09d}.tar``, each written to
    a temporary name and renamed when complete. :meth:`close` writes ``data.list`` (one absolute tar path
    per line, the official list format) and ``manifest.jsonl``, whose ``audio`` fields are
    ``{prefix}_{i:09d}.tar#{id}.{ext}`` and which keeps translation, task and lang.

    Unusable utterances (unreadable audio, missing file) are skipped and counted in :attr:`skipped`.
    """

    def __init__(self, out_dir: Union[str, os.PathLike], utts_per_shard: int = 1000, prefix: str = "shards") -> None:
        if utts_per_shard < 1:
            raise ValueError(f"utts_per_shard must be at least 1, got {utts_per_shard}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.utts_per_shard = utts_per_shard
        self.prefix = prefix
        self.shards: list[Path] = []
        self.utterances: list[Utterance] = []
        self.skipped: collections.Counter = collections.Counter()
        self._tar: Optional[tarfile.TarFile] = None
        self._tmp: Optional[Path] = None
        self._in_shard = 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.jsonl"

    @property
    def list_path(self) -> Path:
        return self.out_dir / "data.list"

    def _encode(self, utt: Utterance) -> tuple[bytes, str, float]:
        """(audio bytes, extension, duration in seconds) of an utterance, as stored in the shard."""
        path, member = split_audio_ref(utt.audio)
        ext = group_key(member if member is not None else os.path.basename(path))[1].lower()
        if utt.start is None and utt.end is None and ext in AUDIO_EXTENSIONS:
            if member is not None:
                data = read_member(path, member)
            else:
                with open(path, "rb") as f:
                    data = f.read()
            return data, ext, audio_info(data, name=utt.audio).duration
        samples = utt.load_audio(SAMPLE_RATE)
        import soundfile as sf  # lazily: importing mooer must not load the audio libraries

        buffer = io.BytesIO()
        sf.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        return buffer.getvalue(), "wav", samples.shape[0] / SAMPLE_RATE

    def add(self, utt: Utterance) -> Optional[Utterance]:
        """Store one utterance; return its new manifest entry, or ``None`` if it was skipped."""
        try:
            data, ext, duration = self._encode(utt)
        except (AudioError, OSError) as exc:
            self.skipped["unreadable audio"] += 1
            logger.warning("skipping %s: %s", utt.id, exc)
            return None
        if self._tar is None:
            self._open_shard()
        assert self._tar is not None
        now = time.time()
        for name, payload in ((f"{utt.id}.txt", utt.text.encode("utf-8")), (f"{utt.id}.{ext}", data)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mtime = now
            self._tar.addfile(info, io.BytesIO(payload))
        shard = self.out_dir / f"{self.prefix}_{len(self.shards) - 1:09d}.tar"
        packed = replace(utt, audio=f"{shard}#{utt.id}.{ext}", start=None, end=None, duration=duration)
        self.utterances.append(packed)
        self._in_shard += 1
        if self._in_shard >= self.utts_per_shard:
            self._close_shard()
        return packed

    def _open_shard(self) -> None:
        final = self.out_dir / f"{self.prefix}_{len(self.shards):09d}.tar"
        self._tmp = final.with_name(f".{final.name}.tmp")
        self._tar = tarfile.open(self._tmp, mode="w", format=tarfile.GNU_FORMAT)
        self.shards.append(final)
        self._in_shard = 0

    def _close_shard(self) -> None:
        if self._tar is not None and self._tmp is not None:
            self._tar.close()
            os.replace(self._tmp, self.shards[-1])
            _forget(os.fspath(self.shards[-1]))
        self._tar, self._tmp = None, None

    def _abort(self) -> None:
        if self._tar is not None and self._tmp is not None:
            self._tar.close()
            self._tmp.unlink(missing_ok=True)
            self.shards.pop()
        self._tar, self._tmp = None, None

    def close(self) -> None:
        """Finish the last shard and write ``data.list`` and ``manifest.jsonl``."""
        self._close_shard()
        tmp = self.list_path.with_name(f".{self.list_path.name}.tmp")
        tmp.write_text("".join(f"{p.resolve()}\n" for p in self.shards), encoding="utf-8")
        os.replace(tmp, self.list_path)
        write_manifest(self.manifest_path, self.utterances)
