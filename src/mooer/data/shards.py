"""Tar shards in the official format: for each utterance, ``{key}.txt`` then ``{key}.{ext}``.

- :func:`read_member` — random access to ``shard.tar#member`` for the map-style dataset, with a per-process
  cache of open tar files and their member index (safe across DataLoader worker forks).
- :func:`index_shard` — the utterances of one tar (valid groups only: a text and an audio member).
- :func:`iter_shard_list` — a streaming reader of a shard list (``data.list``: one tar path per line) that
  splits the work by *utterance count*, so every rank and worker gets the same number of utterances (the
  original splits at tar granularity, so ranks starve or stall).

The writer is :class:`mooer.data.shard_writer.ShardWriter` (it needs manifests, which read shards).

Only local, uncompressed tar files are read; nothing goes through a shell or ``curl`` (the original ran an
unquoted URL through one).
"""

from __future__ import annotations

import collections
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Union

import numpy as np


__all__ = [
    "AUDIO_EXTENSIONS",
    "ShardEntry",
    "ShardError",
    "ShardItem",
    "group_key",
    "index_shard",
    "iter_shard_list",
    "open_member",
    "read_member",
    "read_shard_list",
]

AUDIO_EXTENSIONS = ("flac", "mp3", "m4a", "ogg", "opus", "wav", "wma")
"""Audio member extensions the official shard tools accept."""

_MAX_OPEN = 32  # open tar files kept per process

logger = logging.getLogger("mooer.data")


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

    def open(self, member: str) -> BinaryIO:
        info = self.members.get(member)
        if info is None:
            raise ShardError(f"{self.path}: no member {member!r}")
        try:
            handle = self.tar.extractfile(info)
        except (OSError, tarfile.TarError) as exc:
            raise ShardError(f"{self.path}#{member}: cannot read member: {exc}") from exc
        assert handle is not None  # regular files only
        return handle

    def read(self, member: str) -> bytes:
        handle = self.open(member)
        try:
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
    path = os.path.abspath(path)
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


def _forget(path: str) -> None:
    """Drop a cached open tar (after it was rewritten)."""
    entry = _open_tars.pop(os.path.abspath(path), None)
    if entry is not None:
        entry.close()


def read_member(tar_path: Union[str, os.PathLike], member: str) -> bytes:
    """The bytes of ``member`` in the uncompressed tar ``tar_path`` (raises :class:`ShardError`)."""
    return _get(os.fspath(tar_path)).read(member)


def open_member(tar_path: Union[str, os.PathLike], member: str) -> BinaryIO:
    """A seekable read-only file object over ``member`` (valid until the tar leaves the per-process cache;
    use it at once, e.g. to read an audio header with :func:`mooer.audio.audio_info`)."""
    return _get(os.fspath(tar_path)).open(member)


def index_shard(tar_path: Union[str, os.PathLike]) -> tuple[list[ShardEntry], int]:
    """The valid utterances of a shard, in tar order, and the number of invalid groups.

    A group (consecutive members sharing a key) is valid when it has a ``txt`` member and an audio member
    (:data:`AUDIO_EXTENSIONS`). Every invalid group is counted and left out, the last one included (the
    original yields the last group unchecked, and a bad one ended its epoch). Only headers are read.
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


# ---------------------------------------------------------------------------------------------------------
# Streaming reader
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardItem:
    """One utterance read from a shard."""

    key: str
    text: str
    """The ``txt`` member, UTF-8 decoded and stripped (``▁`` left as is)."""
    audio: bytes
    """The encoded audio member (decode with :func:`mooer.audio.load_audio`)."""
    ext: str
    source: str
    """``shard.tar#member`` of the audio."""


def read_shard_list(list_file: Union[str, os.PathLike]) -> list[str]:
    """The tar paths of a shard list (blank lines ignored; ``file:`` prefixes removed).

    A relative path is taken as given when it exists from the current directory (the original's
    convention), else relative to the list file's directory. Remote URLs are refused with
    :class:`ShardError`: nothing is fetched through a shell (the original's ``curl`` took the URL unquoted).
    """
    list_file = Path(list_file)
    base = list_file.resolve().parent
    paths = []
    with open(list_file, encoding="utf-8") as f:
        for line in f:
            entry = line.strip()
            if not entry:
                continue
            if entry.startswith("file://"):
                entry = entry[len("file://") :]
            elif entry.startswith("file:"):
                entry = entry[len("file:") :]
            elif "://" in entry:
                raise ShardError(f"{list_file}: {entry}: only local tar files are supported (download it first)")
            if not os.path.isabs(entry) and not os.path.exists(entry):
                entry = str(base / entry)
            paths.append(entry)
    return paths


def _worker_split(worker_id: Optional[int], num_workers: Optional[int]) -> tuple[int, int]:
    if worker_id is not None and num_workers is not None:
        return worker_id, num_workers
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def iter_shard_list(
    list_file: Union[str, os.PathLike],
    rank: int = 0,
    world_size: int = 1,
    worker_id: Optional[int] = None,
    num_workers: Optional[int] = None,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
) -> Iterator[ShardItem]:
    """Stream the utterances of a shard list, this rank's and worker's share only.

    The shards are indexed (headers only), optionally put in a seeded ``(seed, epoch)`` order, and their
    ``N`` valid utterances numbered globally. With ``P = world_size · num_workers`` parts, part
    ``rank · num_workers + worker_id`` gets the ``ceil(N / P)`` consecutive utterances starting at
    ``part · ceil(N / P)``, wrapping around to the start when the end is reached: every part gets exactly the
    same number of utterances (a few are read twice when ``P`` does not divide ``N``), and each reads only
    the one or two shards its range covers. ``worker_id`` / ``num_workers`` default to the current DataLoader
    worker's. Invalid groups (no text or no audio member) are skipped, the last one of a tar included.
    """
    worker_id, num_workers = _worker_split(worker_id, num_workers)
    if not (0 <= rank < world_size and 0 <= worker_id < num_workers):
        raise ValueError(f"bad split: rank {rank} of {world_size}, worker {worker_id} of {num_workers}")
    tars = read_shard_list(list_file)
    if shuffle:
        order = np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(len(tars))
        tars = [tars[i] for i in order]
    entries = [(tar, entry) for tar in tars for entry in index_shard(tar)[0]]
    total = len(entries)
    if total == 0:
        return
    parts = world_size * num_workers
    share = -(-total // parts)
    start = (rank * num_workers + worker_id) * share
    for position in range(start, start + share):
        tar, entry = entries[position % total]
        text = read_member(tar, entry.text_member).decode("utf-8").strip()
        yield ShardItem(entry.key, text, read_member(tar, entry.audio_member),
                        group_key(entry.audio_member)[1], f"{tar}#{entry.audio_member}")
