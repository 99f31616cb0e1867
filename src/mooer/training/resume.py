"""Training state for exact resume: atomic, rotated checkpoint directories (weights, optimizer, counters, RNGs).

Layout (one directory per checkpoint, named by optimizer step)::

    EXP/checkpoints/step-00001000/
        trainable.pt  optimizer.pt  scheduler.pt      (single/DDP; DeepSpeed: deepspeed/ + latest)
        state.pt       step counters, epoch, sampler position, config snapshot
        rng-rank{R}.pt python / numpy / torch / cuda RNG states of every rank
        state.json     the counters, human-readable

A checkpoint is first written to ``EXP/checkpoints/.tmp-step-…`` and renamed into place with
``os.replace`` once every rank has written its part, so a run killed at any moment (SIGKILL included)
leaves either the complete checkpoint or none. Only the last ``keep_last`` are kept.

What is restored on resume: trainable weights, optimizer and scheduler state, the sampler position inside
the epoch, the dataset epoch, the step counters and every RNG — so the resumed run logs the same losses as
an uninterrupted one (the original restarted the LR warm-up and the data).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mooer.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)$")


@dataclass
class TrainState:
    """Counters of the loop; saved with every checkpoint."""

    step: int = 0  # optimizer steps taken
    micro_step: int = 0  # micro-batches taken (all epochs)
    epoch: int = 0  # current epoch (0-based)
    batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    sampler: dict = field(default_factory=dict)  # sampler.state_dict(batches_consumed=...)
    utterances: int = 0  # utterances seen
    audio_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def checkpoint_root(exp_dir: str | Path) -> Path:
    return Path(exp_dir) / CHECKPOINT_DIR


def list_checkpoints(exp_dir: str | Path) -> list[Path]:
    """Complete checkpoints of ``exp_dir``, oldest first."""
    root = checkpoint_root(exp_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / "state.pt").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(exp_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(exp_dir)
    return ckpts[-1] if ckpts else None


# ------------------------------------------------------------------------------------------------ RNG


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------- save/load


def save_training_state(engine, state: TrainState, exp_dir: str | Path, keep_last: int, config: dict) -> Path:
    """Write a checkpoint of the current step (collective: call on every rank)."""
    root = checkpoint_root(exp_dir)
    name = f"step-{state.step:08d}"
    final = root / name
    tmp = root / f".tmp-{name}"
    if engine.env.is_main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    engine.barrier()
    engine.save_checkpoint(tmp)  # weights, optimizer, scheduler (DeepSpeed: collective)
    torch.save(rng_state(), tmp / f"rng-rank{engine.env.rank}.pt")
    engine.barrier()
    if engine.env.is_main:
        torch.save({"train_state": state.to_dict(), "config": config, "world_size": engine.env.world_size,
                    "engine": engine.kind}, tmp / "state.pt")
        (tmp / "state.json").write_text(json.dumps(state.to_dict(), indent=2) + "\n", encoding="utf-8")
        if final.exists():  # the same step saved again (e.g. a resumed run): replace it
            trash = root / f".old-{name}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        for old in list_checkpoints(exp_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    engine.barrier()
    return final


def load_training_state(engine, directory: str | Path) -> tuple[TrainState, dict]:
    """Restore weights, optimizer, scheduler and this rank's RNG; return the counters and the config."""
    directory = Path(directory)
    state_file = directory / "state.pt"
    if not state_file.is_file():
        raise CheckpointError(f"{directory}: not a complete training checkpoint (no state.pt)")
    meta = torch.load(state_file, map_location="cpu", weights_only=False)
    if meta.get("world_size", 1) != engine.env.world_size:
        raise CheckpointError(f"{directory}: saved with {meta.get('world_size')} processes, resuming with "
                              f"{engine.env.world_size}; the data order would differ")
    if meta.get("engine") not in (engine.kind, None) and "deepspeed" in (meta.get("engine"), engine.kind):
        raise CheckpointError(f"{directory}: saved by engine {meta.get('engine')!r}, cannot resume with "
                              f"{engine.kind!r}")
    engine.load_checkpoint(directory)
    rng_file = directory / f"rng-rank{engine.env.rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    else:
        log.warning("%s: no RNG state for rank %d; the resumed run will not repeat exactly", directory,
                    engine.env.rank)
    return TrainState(**meta["train_state"]), meta.get("config", {})
