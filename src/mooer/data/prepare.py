"""Importers: existing corpora → native manifests (and manifests → tar shards).

- :func:`prepare_kaldi` — a Kaldi data directory (``wav.scp``, ``text``, optional ``segments``).
- :func:`prepare_shards` — the official shard lists (``data.list`` of tar paths): a manifest
  pointing into the tars, nothing copied.
- :func:`pack` — a manifest → tar shards + ``data.list`` + a manifest pointing into them (:class:`ShardWriter`).

Durations are measured once, here, from the audio headers. Bad entries are skipped and counted, never fatal.
Transcripts go through :func:`target_text` (``▁`` → space, as the original's ``gen_llm_inputs`` does for
its normalised labels, docs/design.md §4). An optional translation table (``uttid translation`` per line, the
original's ``replace_text_path`` format) fills the ``translation`` field; utterances without an entry in it
are kept (ASR only) rather than dropped, as the original did, losing their transcripts.
"""

from __future__ import annotations

import collections
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

from tqdm import tqdm

from mooer.audio import audio_info
from mooer.errors import AudioError
from mooer.data.manifest import Utterance
from mooer.data.shard_writer import ShardWriter
from mooer.data.shards import ShardError, index_shard, open_member, read_member, read_shard_list
from mooer.output.formats import read_key_text

__all__ = ["PrepareResult", "target_text", "read_key_text", "prepare_kaldi", "prepare_shards", "pack"]

logger = logging.getLogger("mooer.data")

PathLike = Union[str, os.PathLike]

#: the word separator of the original's normalised labels (between English words; spaces were deleted)
WORD_SEPARATOR = "\u2581"


@dataclass
class PrepareResult:
    """Utterances produced by an importer and the reasons entries were skipped."""

    utterances: list[Utterance]
    skipped: collections.Counter = field(default_factory=collections.Counter)

    @property
    def hours(self) -> float:
        return sum(u.duration for u in self.utterances) / 3600.0

    def summary(self) -> str:
        """One line: counts, hours, translations, skip reasons."""
        translated = sum(u.translation is not None for u in self.utterances)
        line = f"{len(self.utterances)} utterances, {self.hours:.2f} h, {translated} with translation"
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
            line += f"; skipped {sum(self.skipped.values())} ({reasons})"
        return line


def target_text(text: str) -> str:
    """A transcript as the model learns it: ``▁`` → space, surrounding whitespace stripped."""
    return text.replace(WORD_SEPARATOR, " ").strip()


def _translations(path: Optional[PathLike]) -> dict[str, str]:
    if path is None:
        return {}
    return {k: v.strip() for k, v in read_key_text(path).items() if v.strip()}


def _audio_path(entry: str, data_dir: Path) -> str:
    """A ``wav.scp`` path: as given when it exists from the current directory (Kaldi recipes run from the
    recipe root), else relative to the data directory."""
    if os.path.isabs(entry) or os.path.exists(entry):
        return os.path.abspath(entry)
    return str((data_dir / entry).resolve())


def _duration(source, *, name: str, entry: str) -> Optional[float]:
    """Seconds of audio in ``source`` (called ``name``) from its header, or None: ``entry`` is skipped, and
    the reason logged naming the file.

    Any failure is the file's, never the import's: :func:`audio_info` raises AudioError for whatever its
    decoders raise, and anything else (a bug, a library raising what it should not) is logged with its
    type rather than ending a long import with no manifest.
    """
    try:
        return audio_info(source, name=name).duration
    except AudioError as exc:
        logger.warning("skipping %s: %s", entry, exc)
    except Exception as exc:  # noqa: BLE001 - one unreadable file never stops an import (see above)
        logger.warning("skipping %s: %s: %s: %s", entry, name, type(exc).__name__, exc)
    return None


def prepare_kaldi(
    data_dir: PathLike, *, translation: Optional[PathLike] = None, progress: bool = False
) -> PrepareResult:
    """Import a Kaldi data directory.

    ``wav.scp`` (``recid path``), ``text`` (``uttid transcript``) and optionally ``segments`` (``uttid recid
    start end`` in seconds; ``end`` ≤ 0 or past the file means "to the end"). Utterances follow the order
    of ``text``. Skipped (counted): piped ``wav.scp`` commands (nothing is run through a shell), unreadable
    or missing audio, utterances without an audio entry, empty transcripts, empty segments.
    """
    data_dir = Path(data_dir)
    skipped: collections.Counter = collections.Counter()
    recordings: dict[str, str] = {}
    for rec, entry in read_key_text(data_dir / "wav.scp").items():
        if entry.endswith("|"):
            skipped["piped wav.scp command"] += 1
        elif entry:
            recordings[rec] = _audio_path(entry, data_dir)
    segments: Optional[dict[str, tuple[str, float, float]]] = None
    if (data_dir / "segments").exists():
        segments = {}
        for utt, rest in read_key_text(data_dir / "segments").items():
            fields = rest.split()
            try:
                segments[utt] = (fields[0], float(fields[1]), float(fields[2]))
            except (IndexError, ValueError):
                skipped["bad segments line"] += 1
    translations = _translations(translation)
    durations: dict[str, Optional[float]] = {}

    def duration_of(rec: str) -> Optional[float]:
        if rec not in durations:
            durations[rec] = _duration(recordings[rec], name=recordings[rec], entry=f"recording {rec}")
        return durations[rec]

    utterances: list[Utterance] = []
    texts = read_key_text(data_dir / "text")
    for utt_id, raw in tqdm(texts.items(), desc="kaldi", unit="utt", disable=not progress):
        text = target_text(raw)
        if not text:
            skipped["empty text"] += 1
            continue
        if segments is not None and utt_id not in segments:
            skipped["no segment"] += 1
            continue
        rec, start, end = segments[utt_id] if segments is not None else (utt_id, None, None)
        if rec not in recordings:
            skipped["no audio entry"] += 1
            continue
        total = duration_of(rec)
        if total is None:
            skipped["unreadable audio"] += 1
            continue
        if start is not None:
            end = total if end is None or end <= 0 or end > total else end
            if end - start <= 0:
                skipped["empty segment"] += 1
                continue
        utterances.append(Utterance(
            id=utt_id,
            audio=recordings[rec],
            text=text,
            duration=(end - start) if start is not None else total,
            start=start,
            end=end,
            translation=translations.get(utt_id),
        ))
    if segments is None:
        skipped["no text"] += sum(1 for rec in recordings if rec not in texts)
    else:
        skipped["no text"] += sum(1 for utt in segments if utt not in texts)
    skipped = +skipped  # drop zero counts
    return PrepareResult(utterances, skipped)


def prepare_shards(
    list_file: PathLike, *, translation: Optional[PathLike] = None, progress: bool = False
) -> PrepareResult:
    """Import the official shard list: a manifest whose ``audio`` fields point at ``shard.tar#member``.

    Durations are read from each audio member's header. Skipped (counted): unreadable shards, invalid groups
    (a key without ``txt`` or audio member, the last group of a tar included), empty transcripts,
    unreadable audio, duplicate keys.
    """
    translations = _translations(translation)
    skipped: collections.Counter = collections.Counter()
    utterances: list[Utterance] = []
    seen: set[str] = set()
    tars = read_shard_list(list_file)
    bar = tqdm(tars, desc="shards", unit="tar", disable=not progress)
    for tar in bar:
        try:
            entries, invalid = index_shard(tar)
        except ShardError as exc:
            logger.warning("%s", exc)
            skipped["unreadable shard"] += 1
            continue
        if invalid:
            skipped["invalid group"] += invalid
        for entry in entries:
            if entry.key in seen:
                skipped["duplicate id"] += 1
                continue
            try:
                text = target_text(read_member(tar, entry.text_member).decode("utf-8"))
            except (ShardError, UnicodeDecodeError):
                skipped["unreadable text"] += 1
                continue
            if not text:
                skipped["empty text"] += 1
                continue
            try:
                member = open_member(tar, entry.audio_member)
            except ShardError as exc:
                logger.warning("%s", exc)
                skipped["unreadable audio"] += 1
                continue
            duration = _duration(member, name=f"{tar}#{entry.audio_member}", entry=entry.key)
            if duration is None:
                skipped["unreadable audio"] += 1
                continue
            seen.add(entry.key)
            utterances.append(Utterance(
                id=entry.key,
                audio=f"{os.path.abspath(tar)}#{entry.audio_member}",
                text=text,
                duration=duration,
                translation=translations.get(entry.key),
            ))
        bar.set_postfix(utts=len(utterances))
    return PrepareResult(utterances, skipped)


def pack(
    utterances: Iterable[Utterance],
    out_dir: PathLike,
    *,
    utts_per_shard: int = 1000,
    prefix: str = "shards",
    progress: bool = False,
) -> tuple[PrepareResult, ShardWriter]:
    """Write ``utterances`` into tar shards under ``out_dir`` (with ``data.list`` and ``manifest.jsonl``).

    Returns the packed utterances (pointing into the shards) and the writer (its ``shards``,
    ``list_path`` and ``manifest_path``).
    """
    items = list(utterances)
    with ShardWriter(out_dir, utts_per_shard=utts_per_shard, prefix=prefix) as writer:
        for utt in tqdm(items, desc="pack", unit="utt", disable=not progress):
            writer.add(utt)
    return PrepareResult(list(writer.utterances), writer.skipped), writer
