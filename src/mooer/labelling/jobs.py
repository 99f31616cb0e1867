"""A labelling job: blocks of utterances, one JSONL shard per block, resumable, each key exactly once.

Layout of the output directory::

    OUT/job.json                  what the job is: input keys (hash), block size, teachers
    OUT/labels-000000.jsonl       the records of block 0 (mooer.labelling.label), one per utterance
    OUT/labels-000001.jsonl       ...

Why every key comes out exactly once, whatever stops, restarts or retries happen:

1. the inputs (unique keys, in a fixed order) are cut into blocks of ``block_size``: every key is in exactly
   one block. ``job.json`` pins the keys and the block size; a run on an existing directory with other inputs,
   another block size or other teachers is refused, so a block means the same utterances in every run;
2. a block's shard appears only complete: it is written to a temporary file and renamed into place
   (``os.replace`` is atomic), so a shard that exists holds every key of its block once;
3. a run labels only the blocks without a shard. A stopped job started again therefore skips what is
   written and redoes at most the blocks that were in flight. Two attempts of one block (a worker retried
   by Ray while the first attempt still ran) write the same keys, and the last rename wins.

Two runners share this: :func:`run_local` (one process, no Ray) and :func:`run_ray` (Ray Data: reading and
featurising as CPU tasks, model actors decoding blocks and writing their shards; Ray retries a task or
restarts an actor whose worker or node was lost).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, TextIO

from mooer.errors import ConfigError
from mooer.labelling.inputs import Item
from mooer.labelling.label import Labeller, TeacherSpec, check_specs, featurise

__all__ = ["JobSummary", "plan", "shard_path", "read_labels", "run_local", "run_ray"]

JOB_FILE = "job.json"


def shard_path(out: str | os.PathLike, block: int) -> Path:
    return Path(out) / f"labels-{block:06d}.jsonl"


@dataclass
class JobSummary:
    blocks: int = 0
    blocks_done_before: int = 0
    utterances: int = 0  # labelled in this run
    failed: int = 0  # of those, unreadable or too short
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    def line(self) -> str:
        rate = self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0
        per = self.wall_seconds / self.utterances if self.utterances else 0.0
        return (f"{self.blocks - self.blocks_done_before} of {self.blocks} blocks labelled "
                f"({self.blocks_done_before} already done): {self.utterances} utterances, {self.failed} failed, "
                f"{self.audio_seconds / 3600:.2f} h of audio in {self.wall_seconds:.1f} s "
                f"({per * 1000:.0f} ms per utterance, {rate:.1f} s of audio per second)")


def _blocks(items: Sequence[Item], block_size: int) -> list[list[Item]]:
    return [list(items[i : i + block_size]) for i in range(0, len(items), block_size)]


def plan(items: Sequence[Item], out: str | os.PathLike, specs: Sequence[TeacherSpec],
         block_size: int) -> tuple[list[list[Item]], list[int]]:
    """All blocks and the indices of those still to label; writes or checks ``OUT/job.json``."""
    if block_size < 1:
        raise ConfigError("block size must be >= 1")
    check_specs(specs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256("\n".join(json.dumps(i.to_json(), sort_keys=True) for i in items).encode()).hexdigest()
    job = {"version": 1, "inputs": len(items), "inputs_sha256": digest, "block_size": block_size,
           "teachers": [s.to_json() for s in specs]}
    path = out / JOB_FILE
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != job:
            changed = sorted(k for k in job if old.get(k) != job[k])
            raise ConfigError(f"{out} holds another labelling job (its {', '.join(changed)} differ): resume it "
                              f"with the same inputs, --block-size and teachers, or use a new output directory")
    else:
        _write_atomic(path, json.dumps(job, ensure_ascii=False, indent=1) + "\n")
    blocks = _blocks(items, block_size)
    return blocks, [b for b in range(len(blocks)) if not shard_path(out, b).exists()]


def _write_atomic(path: Path, text: str) -> None:
    # a unique temporary name in the same directory (created with the umask's permissions, unlike mkstemp's
    # 0600, so the other nodes of a cluster can read the shards), then one atomic rename
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_block(out: str | os.PathLike, block: int, records: Sequence[dict]) -> None:
    _write_atomic(shard_path(out, block), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_labels(out: str | os.PathLike) -> Iterator[dict]:
    """Every record of a labelling output directory, in block order (a missing block is skipped)."""
    for path in sorted(Path(out).glob("labels-*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def _count(summary: JobSummary, records: Sequence[dict]) -> None:
    summary.utterances += len(records)
    summary.failed += sum(1 for r in records if "error" in r)
    summary.audio_seconds += sum(r.get("duration") or 0.0 for r in records)


def _log(log: Optional[TextIO], message: str) -> None:
    if log is not None:
        print(f"mooer: {message}", file=log, flush=True)


def run_local(items: Sequence[Item], out: str | os.PathLike, specs: Sequence[TeacherSpec], *,
              block_size: int = 64, batch_size: int = 16, device: Optional[str] = None,
              threads: Optional[int] = None, readers: int = 2, log: Optional[TextIO] = sys.stderr) -> JobSummary:
    """Label the blocks still to do in this process (the next block is read while one decodes)."""
    started = time.perf_counter()
    blocks, todo = plan(items, out, specs, block_size)
    summary = JobSummary(blocks=len(blocks), blocks_done_before=len(blocks) - len(todo))
    if todo:
        labeller = Labeller(specs, device=device, batch_size=batch_size, threads=threads)
        # one thread prefetches the next block while this one decodes; it reads the block's files on
        # ``readers`` threads of a second pool (one pool for both could wait on itself)
        with ThreadPoolExecutor(max_workers=max(1, readers)) as files, ThreadPoolExecutor(max_workers=1) as ahead:
            def read(b: int) -> list[dict]:
                return list(files.map(featurise, blocks[b]))

            reading = ahead.submit(read, todo[0])
            for n, b in enumerate(todo):
                rows = reading.result()
                if n + 1 < len(todo):
                    reading = ahead.submit(read, todo[n + 1])
                records = labeller.label(rows)
                write_block(out, b, records)
                _count(summary, records)
                _log(log, f"block {b} done ({n + 1}/{len(todo)})")
    summary.wall_seconds = time.perf_counter() - started
    return summary


# ------------------------------------------------------------------------------------------------ Ray


def _featurise_block(row: dict) -> dict:
    items = [Item.from_json(j) for j in json.loads(row["items"])]
    return {"block": row["block"], "rows": pickle.dumps([featurise(i) for i in items])}


class _RayLabeller:
    """A Ray Data actor: loads the teachers once, labels whole blocks and writes their shards."""

    def __init__(self, out: str, specs: list[dict], device: Optional[str], batch_size: int, threads: int):
        self.out = out
        self.labeller = Labeller([TeacherSpec(**s) for s in specs], device=device, batch_size=batch_size,
                                 threads=threads)

    def __call__(self, batch: dict) -> dict:
        done = []
        for block, payload in zip(batch["block"], batch["rows"]):
            records = self.labeller.label(pickle.loads(payload))
            write_block(self.out, int(block), records)
            done.append(json.dumps({"block": int(block), "utterances": len(records),
                                    "failed": sum(1 for r in records if "error" in r),
                                    "audio_seconds": sum(r.get("duration") or 0.0 for r in records)}))
        return {"done": done}


def run_ray(items: Sequence[Item], out: str | os.PathLike, specs: Sequence[TeacherSpec], *,
            address: Optional[str] = None, actors: int = 1, actor_cpus: float = 1.0, actor_gpus: float = 0.0,
            reader_cpus: float = 1.0, block_size: int = 64, batch_size: int = 16, threads: Optional[int] = None,
            log: Optional[TextIO] = sys.stderr) -> JobSummary:
    """Label the blocks still to do with Ray Data (see the module docstring).

    ``address``: a Ray cluster (``auto``, ``ray://host:10001``, ``host:6379``); None starts a local Ray in this
    process, unless one is already initialised (it is then used and left running). ``actors`` model actors
    (each ``actor_gpus`` GPUs, ``actor_cpus`` CPUs, ``threads`` torch threads, default ``actor_cpus``); each
    reading/featurising task takes ``reader_cpus``. The output directory must be reachable from every node
    (a shared file system). Tasks are retried and actors restarted without limit when their worker dies
    (Ray Data's defaults).
    """
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ConfigError("Ray is not installed: pip install 'mooer[ray]'") from e
    started = time.perf_counter()
    out = Path(out).resolve()
    blocks, todo = plan(items, out, specs, block_size)
    summary = JobSummary(blocks=len(blocks), blocks_done_before=len(blocks) - len(todo))
    if not todo:
        summary.wall_seconds = time.perf_counter() - started
        return summary
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=address, include_dashboard=False, log_to_driver=log is not None)
    try:
        rows = [{"block": b, "items": json.dumps([i.to_json() for i in blocks[b]])} for b in todo]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))  # one read task per block
        # Ray Data's defaults retry a task without limit and restart a lost actor without limit, re-sending
        # its blocks (tests/test_labelling_ray.py kills a worker node mid-job)
        ds = ds.map(_featurise_block, num_cpus=reader_cpus)
        ds = ds.map_batches(
            _RayLabeller, batch_size=1, concurrency=actors, num_cpus=actor_cpus, num_gpus=actor_gpus,
            fn_constructor_kwargs={"out": str(out), "specs": [asdict(s) for s in specs],
                                   "device": "cuda" if actor_gpus > 0 else "cpu", "batch_size": batch_size,
                                   "threads": threads or max(1, int(actor_cpus))})
        for n, row in enumerate(ds.iter_rows()):
            done = json.loads(row["done"])
            summary.utterances += done["utterances"]
            summary.failed += done["failed"]
            summary.audio_seconds += done["audio_seconds"]
            _log(log, f"block {done['block']} done ({n + 1}/{len(todo)})")
    finally:
        if owned:
            ray.shutdown()
    missing = [b for b in todo if not shard_path(out, b).exists()]
    if missing:  # cannot happen unless a shard was removed under our feet
        raise RuntimeError(f"blocks {missing[:10]} have no shard after the run")
    summary.wall_seconds = time.perf_counter() - started
    return summary
