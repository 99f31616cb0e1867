"""What to label: unlabelled audio from a manifest, a ``wav.scp``, directories or tar shards.

Every source becomes a list of :class:`Item` (key, audio reference, optional segment and language) in a
stable order; keys must be unique, because the output is keyed by them.

- ``*.jsonl``: a manifest (:mod:`mooer.data.manifest`); ``text`` may be missing, ``duration`` (or
  ``start``/``end``) is needed; ``start``/``end`` and ``lang`` are kept.
- ``--scp FILE``: Kaldi ``wav.scp``, ``key path`` per line.
- a directory: every audio/video file below it (:func:`mooer.audio.find_audio_files`).
- ``*.tar``: an uncompressed tar shard; every audio member is one item, keyed by its name without extension
  (text members, if any, are ignored). ``*.list``: a shard list, one tar per line.
- anything else: one audio file, keyed by its stem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from mooer.errors import ConfigError

__all__ = ["Item", "read_inputs"]


@dataclass(frozen=True)
class Item:
    """One utterance to label."""

    key: str
    audio: str  # a path, or ``shard.tar#member``
    start: Optional[float] = None
    end: Optional[float] = None
    lang: Optional[str] = None

    def load_audio(self) -> np.ndarray:
        """The 16 kHz mono waveform (the segment when ``start``/``end`` are set)."""
        from mooer.data.manifest import Utterance

        return Utterance(self.key, self.audio, "", 0.0, start=self.start, end=self.end).load_audio()

    def to_json(self) -> dict:
        out: dict = {"key": self.key, "audio": self.audio}
        for name in ("start", "end", "lang"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_json(cls, record: dict) -> "Item":
        return cls(str(record["key"]), str(record["audio"]), record.get("start"), record.get("end"),
                   record.get("lang"))


def _tar_items(tar: str) -> list[Item]:
    from mooer.data.shards import AUDIO_EXTENSIONS, _get, group_key

    tar = os.path.abspath(tar)
    items = []
    for name in _get(tar).members:  # dict order = tar order
        key, ext = group_key(name)
        if ext in AUDIO_EXTENSIONS:
            items.append(Item(key.replace("/", "_"), f"{tar}#{name}"))
    return items


def _source_items(source: str) -> list[Item]:
    path = Path(source)
    if path.is_dir():
        from mooer.audio import find_audio_files

        return [Item(key, file) for key, file in find_audio_files(path)]
    if path.suffix == ".jsonl":
        from mooer.data.manifest import read_manifest

        read = read_manifest(path, require_text=False)
        return [Item(u.id, u.audio, u.start, u.end, u.lang) for u in read.utterances]
    if path.suffix == ".tar":
        return _tar_items(str(path))
    if path.suffix == ".list":
        from mooer.data.shards import read_shard_list

        return [item for tar in read_shard_list(path) for item in _tar_items(tar)]
    return [Item(path.stem, str(path.resolve()))]


def read_inputs(sources: Iterable[str] = (), scp: Optional[str] = None) -> list[Item]:
    """The items of ``sources`` (see the module docstring) and of ``scp``, in the given order.

    Raises :class:`~mooer.errors.ConfigError` when nothing was found or a key occurs twice.
    """
    items: list[Item] = []
    for source in sources:
        items += _source_items(str(source))
    if scp:
        from mooer.output.formats import iter_key_text

        for n, key, path in iter_key_text(scp):
            if not path:
                raise ConfigError(f"{scp}:{n}: expected 'key path'")
            items.append(Item(key, path))
    if not items:
        raise ConfigError("no input: give a manifest (.jsonl), --scp FILE, a directory, audio files or tar shards")
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            raise ConfigError(f"key {item.key!r} occurs twice in the inputs; keys must be unique (the labels are "
                              f"keyed by them)")
        seen.add(item.key)
    return items
