"""The native manifest: JSON lines, one utterance per line.

Fields of a line::

    {"id": "utt1", "audio": "wav/utt1.wav", "duration": 3.2, "text": "你好",
     "translation": "hello", "task": "asr_ast", "lang": "zh", "start": 1.5, "end": 4.7}

- ``id`` (unique), ``audio``, ``text`` and ``duration`` (seconds) are required; ``duration`` may be left out
  when ``start`` and ``end`` are both given (it is then ``end - start``).
- ``audio`` is a path; a relative path resolves against the manifest file's directory. A member of an
  uncompressed tar shard is written ``path/to/shard.tar#member.wav`` (see :mod:`mooer.data.shards`).
- ``start`` / ``end`` (seconds) select a segment of the file.
- ``translation`` is the English target of the ``ast`` and ``asr_ast`` tasks; ``task`` forces one task
  (``asr``, ``ast`` or ``asr_ast``) for the utterance; ``lang`` is free-form metadata.

:func:`read_manifest` never fails on a bad line: it skips it, counts the reason, and logs a one-line summary.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from mooer.audio import load_audio, load_audio_segment
from mooer.features import SAMPLE_RATE
from mooer.tasks import TASKS

__all__ = ["Utterance", "ManifestRead", "read_manifest", "write_manifest", "split_audio_ref", "TAR_MEMBER_SEP"]

logger = logging.getLogger("mooer.data")

TAR_MEMBER_SEP = ".tar#"
"""``audio`` values containing this refer to a member of a tar shard: ``shard.tar#member``."""

PathLike = Union[str, os.PathLike]


@dataclass
class Utterance:
    """One training/evaluation utterance (one manifest line)."""

    id: str
    audio: str
    """Absolute path (after :func:`read_manifest`), or ``/abs/shard.tar#member``."""
    text: str
    duration: float
    """Seconds of audio the utterance covers (the segment length when ``start``/``end`` are set)."""
    start: Optional[float] = None
    end: Optional[float] = None
    translation: Optional[str] = None
    task: Optional[str] = None
    lang: Optional[str] = None

    def load_audio(self, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """The utterance's waveform: mono float32 at ``sample_rate``, the ``[start, end)`` segment if set.

        Always downmixed and resampled, whatever the file's rate and channels (the original took channel 0
        at an assumed 16 kHz, mis-featurising any other rate). Tar members are read with
        :func:`mooer.data.shards.read_member`.
        Raises :class:`~mooer.errors.AudioError` naming ``audio`` (unreadable, undecodable or too short
        audio, whatever the decoder raised) or ``OSError`` (a missing shard or member).
        """
        from mooer.data.shards import read_member

        path, member = split_audio_ref(self.audio)
        source: Union[str, bytes] = path if member is None else read_member(path, member)
        if self.start is None and self.end is None:
            return load_audio(source, sample_rate=sample_rate, name=self.audio)
        return load_audio_segment(source, self.start or 0.0, self.end, sample_rate=sample_rate, name=self.audio)

    def to_json(self) -> dict[str, Any]:
        """The manifest line as a dict (optional fields left out when unset)."""
        out: dict[str, Any] = {"id": self.id, "audio": self.audio}
        if self.start is not None:
            out["start"] = self.start
        if self.end is not None:
            out["end"] = self.end
        out["duration"] = round(self.duration, 4)
        out["text"] = self.text
        for name in ("translation", "task", "lang"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass
class ManifestRead:
    """What :func:`read_manifest` returns: the usable utterances and why the others were skipped."""

    utterances: list[Utterance]
    skipped: collections.Counter = field(default_factory=collections.Counter)

    @property
    def durations(self) -> list[float]:
        """Durations in seconds, in utterance order (what the samplers take)."""
        return [u.duration for u in self.utterances]


def split_audio_ref(audio: str) -> tuple[str, Optional[str]]:
    """``"a/b.tar#k.wav"`` → ``("a/b.tar", "k.wav")``; a plain path → ``(path, None)``."""
    cut = audio.find(TAR_MEMBER_SEP)
    if cut < 0:
        return audio, None
    cut += len(TAR_MEMBER_SEP) - 1
    return audio[:cut], audio[cut + 1 :]


def _resolve(audio: str, base: Path) -> str:
    path, member = split_audio_ref(audio)
    resolved = path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))
    return resolved if member is None else f"{resolved}#{member}"


def _optional_float(record: dict, key: str) -> Optional[float]:
    value = record.get(key)
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(key)
    return value


def _parse(record: Any, base: Path, require_text: bool = True) -> Union[Utterance, str]:
    """A decoded JSON line → an Utterance, or the reason it is unusable."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not require_text and not record.get("text"):
        record = {**record, "text": ""}
    for key in ("id", "audio", "text") if require_text else ("id", "audio"):
        value = record.get(key)
        if value is None:
            return f"missing {key}"
        if isinstance(value, str) and not value.strip():
            return "empty text" if key == "text" else f"missing {key}"
    text = record["text"]
    if not isinstance(text, str):
        return "text not a string"
    try:
        start = _optional_float(record, "start")
        end = _optional_float(record, "end")
        duration = _optional_float(record, "duration")
    except (TypeError, ValueError):
        return "bad start/end/duration"
    if duration is None and start is not None and end is not None:
        duration = end - start
    if duration is None:
        return "missing duration"
    if start is not None and end is not None and end <= start:
        return "end before start"
    translation = record.get("translation")
    if translation is not None and (not isinstance(translation, str) or not translation.strip()):
        translation = None
    task = record.get("task")
    if task is not None and task not in TASKS:
        return "unknown task"
    lang = record.get("lang")
    return Utterance(
        id=str(record["id"]),
        audio=_resolve(str(record["audio"]), base),
        text=text.strip(),
        duration=duration,
        start=start,
        end=end,
        translation=translation.strip() if translation is not None else None,
        task=task,
        lang=None if lang is None else str(lang),
    )


def read_manifest(
    path: PathLike,
    *,
    min_duration: Optional[float] = None,
    max_duration: Optional[float] = None,
    require_translation: bool = False,
    check_files: bool = True,
    require_text: bool = True,
) -> ManifestRead:
    """Read a JSONL manifest, skipping (and counting) unusable lines.

    Reasons counted in ``skipped``: ``invalid JSON``, ``missing id/audio/text``, ``empty text``,
    ``missing duration``, ``bad start/end/duration``, ``too short`` / ``too long`` (outside
    ``[min_duration, max_duration]``; a duration ≤ 0 is always too short), ``missing translation`` (with
    ``require_translation``, or a forced ``ast``/``asr_ast`` task without one), ``unknown task``,
    ``duplicate id``, ``missing file`` (the audio file or tar shard does not exist; tar members are not
    opened here). Blank lines are ignored silently. A file that cannot be opened raises ``OSError``.
    ``require_text=False`` reads unlabelled manifests (pseudo-labelling input): a missing text is ``""``.
    """
    path = Path(path)
    base = path.resolve().parent
    utterances: list[Utterance] = []
    skipped: collections.Counter = collections.Counter()
    seen: set[str] = set()
    exists: dict[str, bool] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                skipped["invalid JSON"] += 1
                continue
            utt = _parse(record, base, require_text)
            if isinstance(utt, str):
                skipped[utt] += 1
                continue
            reason = _check(utt, min_duration, max_duration, require_translation)
            if reason is None and utt.id in seen:
                reason = "duplicate id"
            if reason is None and check_files:
                file = split_audio_ref(utt.audio)[0]
                if file not in exists:
                    exists[file] = os.path.isfile(file)
                if not exists[file]:
                    reason = "missing file"
            if reason is not None:
                skipped[reason] += 1
                continue
            seen.add(utt.id)
            utterances.append(utt)
    if skipped:
        summary = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
        logger.warning("%s: skipped %d of %d lines (%s)", path, sum(skipped.values()),
                       sum(skipped.values()) + len(utterances), summary)
    return ManifestRead(utterances, skipped)


def _check(
    utt: Utterance, min_duration: Optional[float], max_duration: Optional[float], require_translation: bool
) -> Optional[str]:
    if utt.duration <= 0 or (min_duration is not None and utt.duration < min_duration):
        return "too short"
    if max_duration is not None and utt.duration > max_duration:
        return "too long"
    needs_translation = require_translation or utt.task in ("ast", "asr_ast")
    if needs_translation and utt.translation is None:
        return "missing translation"
    return None


def _relative(audio: str, base: Path) -> str:
    """Write ``audio`` relative to ``base`` when it lies below it, else unchanged."""
    path, member = split_audio_ref(audio)
    if os.path.isabs(path):
        rel = os.path.relpath(path, base)
        if not rel.startswith(os.pardir):
            path = rel
    return path if member is None else f"{path}#{member}"


def write_manifest(path: PathLike, utterances: Iterable[Utterance], *, relative: bool = True) -> int:
    """Write ``utterances`` as JSONL to ``path`` atomically (temporary file + ``os.replace``).

    With ``relative`` (default), audio paths below the manifest's directory are written relative to it,
    so the directory can be moved. Returns the number of lines written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    count = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for utt in utterances:
                record = utt.to_json()
                if relative:
                    record["audio"] = _relative(utt.audio, base)
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return count
