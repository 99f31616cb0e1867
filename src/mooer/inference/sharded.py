"""Decoding a large list of inputs in several processes, resumably.

Launch the CLI under ``torchrun`` (one process per GPU, or a few per CPU machine)::

    torchrun --nproc_per_node 4 -m mooer.cli transcribe --scp wav.scp --output hyp.jsonl --format jsonl

(``torchrun --no-python --nproc_per_node 4 mooer transcribe ...`` runs the console script instead).
Every rank:

1. reads the keys that are already decoded (with ``resume``): successful records of the final output and of
   every ``OUTPUT.rank*`` file left by an interrupted run (a truncated last line is ignored; records with
   an ``error`` are decoded again);
2. waits for the others (a gloo barrier), so that all ranks agree on what is left; what is left is cut into
   chunks (at most ``window`` inputs, at least four chunks per rank when there is enough work), numbered in
   input order;
3. claims chunks one at a time, each by creating ``OUTPUT.claims/CHUNK`` with ``O_CREAT | O_EXCL`` (atomic
   on a local or NFS file system: exactly one rank succeeds), and decodes the chunks it won (length-sorted
   batches inside each), appending one JSON line per result to ``OUTPUT.rank{r}`` and flushing after every
   result. A fast rank simply claims more chunks (no fixed stride: a slow rank or a long tail holds no one up);
4. waits for the others; rank 0 then writes ``OUTPUT`` in input order, in the requested format, atomically
   (a temporary file renamed into place), and deletes the rank files and the claims.

Why a restart loses and repeats nothing: every result is on disk (flushed) when its batch ends, and a run
started with ``resume`` decodes only the keys with no successful record in ``OUTPUT`` or in *any*
``OUTPUT.rank*`` file, whatever world size wrote them; rank 0 clears the claims of the stopped run before
the first barrier, so no chunk stays claimed by a rank that is gone. Only the batches in flight when the
run stopped are decoded again. (Under torchrun a lost rank stops the whole job; ``--max-restarts`` or a
manual restart with ``--resume`` continues it, on any number of ranks.)

Without torchrun (``WORLD_SIZE`` unset) the same code runs as a single rank, which is what ``--resume``
uses for a one-process run. Rank files are always JSON lines (the key is needed to resume and to merge),
whatever the final format is.
"""

from __future__ import annotations

import datetime
import glob
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence, TextIO

from mooer.decoding import Result
from mooer.distributed import DistInfo, dist_info
from mooer.output import formats

__all__ = ["rank_file", "claims_dir", "claim", "read_records", "run_sharded"]


def rank_file(output: str | os.PathLike, rank: int) -> Path:
    return Path(f"{output}.rank{rank}")


def claims_dir(output: str | os.PathLike) -> Path:
    return Path(f"{output}.claims")


def claim(directory: Path, chunk: int) -> bool:
    """Claim ``chunk`` for this process: True for exactly one caller (an exclusive create)."""
    try:
        fd = os.open(directory / str(chunk), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
    os.close(fd)
    return True


def read_records(paths: Iterable[str | os.PathLike]) -> dict[str, dict]:
    """Successful records (no ``error``) by key from jsonl / tsv result files; later files win, missing
    files are skipped."""
    records: dict[str, dict] = {}
    for path in paths:
        try:
            found = formats.read_records(path)
        except FileNotFoundError:
            continue
        records.update((str(r["key"]), r) for r in found if not r.get("error"))
    return records


def _existing_rank_files(output: str | os.PathLike) -> list[Path]:
    pattern = glob.escape(str(output)) + ".rank*"
    return sorted((Path(p) for p in glob.glob(pattern) if p.rsplit(".rank", 1)[-1].isdigit()),
                  key=lambda p: int(str(p).rsplit(".rank", 1)[-1]))


class _Group:
    """gloo process group for the barriers (nothing when running alone)."""

    def __init__(self, info: DistInfo, timeout_s: float):
        self.info = info
        self.owned = False
        if info.distributed:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size,
                                        timeout=datetime.timedelta(seconds=timeout_s))
                self.owned = True

    def barrier(self) -> None:
        if self.info.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()


def run_sharded(
    model,
    paths: Sequence,
    keys: Sequence[str],
    output: str | os.PathLike,
    *,
    write: Callable[[Iterable[Result], TextIO], None],
    resume: bool = False,
    keyed_output: bool = True,
    info: DistInfo | None = None,
    window: int = 512,
    log: TextIO | str | None = "stderr",
    **transcribe_kwargs,
) -> list[Result] | None:
    """Decode this rank's share of ``paths`` (see the module docstring); rank 0 merges and returns all
    results in input order (records taken over from an earlier run included), other ranks return None.

    ``keyed_output`` says whether the final output names its keys (jsonl, tsv) and so can be resumed from;
    a plain-text output cannot (only the rank files of an interrupted run are used then).
    ``write(results, file)`` writes the final output in the requested format; ``transcribe_kwargs`` go to
    :meth:`MooER.transcribe` (task, batch_size, decoding, ...). The barrier timeout is
    ``MOOER_DIST_TIMEOUT`` seconds (default 24 h: a shard can take long). A line saying how much is left
    goes to ``log`` (standard error by default; None for none).
    """
    info = info or dist_info()
    if log == "stderr":
        log = sys.stderr  # looked up at call time (redirections, pytest's capture)
    if len(paths) != len(keys):
        raise ValueError(f"{len(keys)} keys for {len(paths)} inputs")
    output = Path(output)
    group = _Group(info, float(os.environ.get("MOOER_DIST_TIMEOUT", 24 * 3600)))
    claims = claims_dir(output)
    try:
        done: dict[str, dict] = {}
        if resume:
            done = read_records([*([output] if keyed_output else []), *_existing_rank_files(output)])
        if info.rank == 0:  # claims of a stopped run: their ranks are gone
            shutil.rmtree(claims, ignore_errors=True)
        group.barrier()  # everyone has read the old files before anyone writes or claims
        claims.mkdir(parents=True, exist_ok=True)
        todo = [i for i in range(len(paths)) if str(keys[i]) not in done]
        # at most ``window`` inputs, and small enough that every rank gets several chunks (balance)
        size = max(1, min(window, -(-len(todo) // (4 * info.world_size))))
        chunks = [todo[start : start + size] for start in range(0, len(todo), size)]
        if log is not None and (resume or info.distributed):
            print(f"mooer: rank {info.rank}/{info.world_size}: {len(paths)} inputs, {len(done)} already decoded, "
                  f"{len(todo)} to decode in {len(chunks)} chunks that the ranks claim", file=log)

        own = rank_file(output, info.rank)
        own.parent.mkdir(parents=True, exist_ok=True)
        mode = "a" if resume else "w"
        with open(own, mode, encoding="utf-8") as f:
            if resume and f.tell() > 0:
                with open(own, "rb") as r:  # a cut last line must not swallow the next record
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write("\n")

            def append(results: list[Result]) -> None:
                formats.write_results(results, "jsonl", f)

            for number, part in enumerate(chunks):
                if not claim(claims, number):
                    continue
                model.transcribe([paths[i] for i in part], keys=[keys[i] for i in part], on_results=append,
                                 **transcribe_kwargs)
        group.barrier()  # every rank file is complete
        if info.rank != 0:
            return None

        rank_files = _existing_rank_files(output) if resume else [rank_file(output, r)
                                                                 for r in range(info.world_size)]
        records = dict(done)
        errors: dict[str, dict] = {}
        for path in rank_files:
            for record in formats.read_records(path):
                (errors if record.get("error") else records)[str(record["key"])] = record
        results = []
        for i, key in enumerate(keys):
            record = records.get(str(key)) or errors.get(str(key))
            if record is None:  # cannot happen unless a rank file was removed under our feet
                record = {"key": str(key), "audio": str(paths[i]), "error": "no result was written for this input"}
            results.append(formats.result_from_record(record))
        tmp = output.with_name(output.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            write(results, out)
        os.replace(tmp, output)
        for path in rank_files:
            path.unlink(missing_ok=True)
        shutil.rmtree(claims, ignore_errors=True)
        return results
    finally:
        group.close()
