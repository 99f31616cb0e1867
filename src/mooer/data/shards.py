"""Tar shards in the official format (spec §10.3): for each utterance, ``{key}.txt`` then ``{key}.{ext}``.

- :func:`read_member` — random access to ``shard.tar#member`` for the map-style dataset, with a per-process
  cache of open tar files and their member index (safe across DataLoader worker forks).
- :func:`index_shard` — the utterances of one tar (valid groups only: a text and an audio member).

Only local, uncompressed tar files are read; nothing goes through a shell or ``curl`` (15.41).
"""

from __future__ import annotations

import collections
import os
import tarfile
from dataclasses import dataclass
from typing import Optional, Union

__all__ = ["AUDIO_EXTENSIONS", "ShardEntry", "ShardError", "read_member", "index_shard", "group_key"]

AUDIO_EXTENSIONS = ("flac", "mp3", "m4a", "ogg", "opus", "wav", "wma")
"""Audio member extensions the official shard tools accept."""

_MAX_OPEN = 32  # open tar files kept per process


class ShardError(OSError):
    """A tar shard or one of its members cannot be read."""


@dataclass(frozen=True)
class ShardEntry:
    """One utterance of a shard: its key and the names of its text and audio members."""

    key: str
    text_member: str
    audio_member: str


def group_key(name: str) -> tuple[str, str]:
    """``"dir/utt.1.wav"`` → ``("dir/utt.1", "wav")``: everything before the last ``.`` is the group key."""
    stem, dot, ext = name.rpartition(".")
    return (stem, ext) if dot else (name, "")


class _OpenTar:
    """An open tar file plus its name → TarInfo index."""

    def __init__(self, path: str) -> None:
        try:
            self.tar = tarfile.open(path, mode="r:")
            self.members = {m.name: m for m in self.tar.getmembers() if m.isfile()}
        except (OSError, tarfile.TarError) as exc:
            raise ShardError(f"{path}: cannot read tar shard: {exc}") from exc
        self.path = path

    def read(self, member: str) -> bytes:
        info = self.members.get(member)
        if info is None:
            raise ShardError(f"{self.path}: no member {member!r}")
        try:
            handle = self.tar.extractfile(info)
            assert handle is not None
            return handle.read()
        except (OSError, tarfile.TarError) as exc:
            raise ShardError(f"{self.path}#{member}: cannot read member: {exc}") from exc

    def close(self) -> None:
        self.tar.close()


_open_tars: "collections.OrderedDict[str, _OpenTar]" = collections.OrderedDict()
_owner_pid: Optional[int] = None


def _get(path: str) -> _OpenTar:
    """The cached open tar for ``path`` (the cache is per process: a forked worker starts a fresh one)."""
    global _owner_pid
    if _owner_pid != os.getpid():  # forked: never share file offsets with the parent
        _open_tars.clear()
        _owner_pid = os.getpid()
    entry = _open_tars.get(path)
    if entry is None:
        entry = _OpenTar(path)
        _open_tars[path] = entry
        while len(_open_tars) > _MAX_OPEN:
            _open_tars.popitem(last=False)[1].close()
    else:
        _open_tars.move_to_end(path)
    return entry


def read_member(tar_path: Union[str, os.PathLike], member: str) -> bytes:
    """The bytes of ``member`` in the uncompressed tar ``tar_path`` (raises :class:`ShardError`)."""
    return _get(os.fspath(tar_path)).read(member)


def index_shard(tar_path: Union[str, os.PathLike]) -> tuple[list[ShardEntry], int]:
    """The valid utterances of a shard, in tar order, and the number of invalid groups.

    A group (consecutive members sharing a key) is valid when it has a ``txt`` member and an audio member
    (:data:`AUDIO_EXTENSIONS`). Every invalid group is counted and left out, the last one included (the
    original yields the last group unchecked, 15.42). Only headers are read.
    """
    opened = _get(os.fspath(tar_path))
    entries: list[ShardEntry] = []
    invalid = 0
    groups: list[tuple[str, dict[str, str]]] = []
    for name in opened.members:  # dict order = tar order
        key, ext = group_key(name)
        if not groups or groups[-1][0] != key:
            groups.append((key, {}))
        groups[-1][1][ext] = name
    for key, members in groups:
        audio = next((members[e] for e in AUDIO_EXTENSIONS if e in members), None)
        if "txt" in members and audio is not None:
            entries.append(ShardEntry(key, members["txt"], audio))
        else:
            invalid += 1
    return entries, invalid
