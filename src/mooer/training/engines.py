"""How processes cooperate during training: one process, DDP (torchrun), or DeepSpeed ZeRO-2/3.

All engines share one interface used by the trainer:

- ``engine.module``: the unwrapped :class:`~mooer.models.mooer.MooERNetwork`;
- ``with engine.accumulate(boundary): out = engine.forward(...); engine.backward(out.loss)`` — a micro-batch;
  ``boundary`` is True on the last micro-batch of a gradient-accumulation group (DDP syncs only then);
- ``engine.step(boundary)`` — after every micro-batch: on a boundary clip, step the optimizer and the
  scheduler, zero the gradients; returns the gradient norm (or None);
- ``engine.save_checkpoint(dir)`` / ``engine.load_checkpoint(dir)``: weights, optimizer and scheduler for
  exact resume (called by :mod:`~mooer.training.resume`); ``engine.gathered()`` makes every parameter whole
  for an export (under ZeRO-3 each rank holds only a partition; the original exported the empty ones);
- :class:`BadBatchStandIn` replaces a batch with no usable utterance, so that every rank still runs the
  forward and backward (and their collectives).

Launch: ``mooer train`` (single), ``torchrun --nproc_per_node N -m mooer.cli train ...`` (DDP or DeepSpeed;
the rank and world size come from the environment). CPU runs use the gloo backend, CUDA runs NCCL.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

from mooer.errors import ConfigError
from mooer.distributed import DistInfo
from mooer.training.config import Config
from mooer.training.schedule import build_scheduler

log = logging.getLogger(__name__)


def pick_device(cfg: Config, env: DistInfo) -> torch.device:
    if cfg.train.device != "auto":
        dev = torch.device(cfg.train.device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", env.local_rank)
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def init_process_group(cfg: Config, env: DistInfo, device: torch.device) -> None:
    if not env.distributed or dist.is_initialized():
        return
    backend = cfg.engine.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.engine.type == "deepspeed":
        import deepspeed

        deepspeed.init_distributed(dist_backend=backend)
    else:
        dist.init_process_group(backend=backend)


def build_optimizer(params: Iterable[nn.Parameter], cfg: Config) -> torch.optim.Optimizer:
    o = cfg.optim
    return torch.optim.AdamW(list(params), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


class Engine:
    """Single process: plain optimizer + LambdaLR scheduler."""

    kind = "single"

    def __init__(self, model: nn.Module, cfg: Config, env: DistInfo, device: torch.device, total_steps: int):
        self.module = model
        self.cfg = cfg
        self.env = env
        self.device = device
        self.accum = cfg.optim.grad_accum
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, cfg)
        o = cfg.optim
        self.scheduler = build_scheduler(self.optimizer, o.schedule, o.warmup_steps, total_steps, o.min_lr_ratio)
        self.wrapped: nn.Module = model

    # ---------------------------------------------------------------------------------------- a step
    def accumulate(self, boundary: bool):
        return contextlib.nullcontext()

    def forward(self, features, lengths, tokens, ctc_targets=None):
        return self.wrapped(features, lengths, tokens, ctc_targets)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accum).backward()

    def step(self, boundary: bool) -> float | None:
        if not boundary:
            return None
        clip = self.cfg.optim.clip_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip if clip > 0 else float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def discard_gradients(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # -------------------------------------------------------------------------------------- resume
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.module.named_parameters() if p.requires_grad}

    def save_checkpoint(self, directory: Path) -> None:
        """Called on every rank; rank 0 writes (single/DDP state is replicated)."""
        if self.env.is_main:
            torch.save(self.trainable_state(), directory / "trainable.pt")
            torch.save(self.optimizer.state_dict(), directory / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), directory / "scheduler.pt")

    def load_checkpoint(self, directory: Path) -> None:
        from mooer.checkpoint import torch_load_weights
        from mooer.errors import CheckpointError

        state = torch_load_weights(directory / "trainable.pt")
        own = {n: p for n, p in self.module.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(f"{directory}/trainable.pt does not match the trainable parameters of this "
                                  f"config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        with torch.no_grad():
            for name, p in own.items():
                p.copy_(state[name])
        self.optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location=self.device,
                                                  weights_only=True))
        self.scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))

    # ------------------------------------------------------------------------------------ collectives
    def gathered(self):
        """Context in which every parameter holds its full value (a no-op except under ZeRO-3)."""
        return contextlib.nullcontext()

    def barrier(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        if not (dist.is_available() and dist.is_initialized()):
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def all_gather_object(self, obj):
        if not (dist.is_available() and dist.is_initialized()):
            return [obj]
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out


class DDPEngine(Engine):
    """DistributedDataParallel over the model; gradients sync on accumulation boundaries only."""

    kind = "ddp"

    def __init__(self, model, cfg, env, device, total_steps):
        super().__init__(model, cfg, env, device, total_steps)
        from torch.nn.parallel import DistributedDataParallel

        self.wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.engine.find_unused_parameters)

    def accumulate(self, boundary: bool):
        return contextlib.nullcontext() if boundary else self.wrapped.no_sync()


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO-2/3 with our AdamW and schedule (the JSON's optimizer/scheduler are replaced)."""

    kind = "deepspeed"

    def __init__(self, model, cfg, env, device, total_steps):
        import deepspeed

        super().__init__(model, cfg, env, device, total_steps)  # our AdamW and schedule, handed to DeepSpeed
        ds_config = deepspeed_config(cfg, env, device)
        self.ds, self.optimizer, _, scheduler = deepspeed.initialize(
            model=model, model_parameters=self.params, optimizer=self.optimizer, lr_scheduler=self.scheduler,
            config=ds_config)
        self.scheduler = scheduler or self.scheduler
        self.wrapped = self.ds
        self.zero_stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))

    def accumulate(self, boundary: bool):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss)  # DeepSpeed divides by gradient_accumulation_steps itself

    def step(self, boundary: bool) -> float | None:
        self.ds.step()
        if not boundary:
            return None
        norm = self.ds.get_global_grad_norm()
        return None if norm is None else float(norm)

    def discard_gradients(self) -> None:
        self.ds.zero_grad()

    @property
    def lr(self) -> float:
        return self.ds.get_lr()[0]

    def save_checkpoint(self, directory: Path) -> None:
        self.ds.save_checkpoint(str(directory), tag="deepspeed", exclude_frozen_parameters=True)

    def load_checkpoint(self, directory: Path) -> None:
        path, _ = self.ds.load_checkpoint(str(directory), tag="deepspeed", load_module_strict=False,
                                          load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            from mooer.errors import CheckpointError

            raise CheckpointError(f"{directory}: no DeepSpeed checkpoint (tag 'deepspeed') to resume from")

    def gathered(self):
        if self.zero_stage == 3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None)
        return contextlib.nullcontext()


class BadBatchStandIn:
    """Stands in for a batch with no usable utterance, so that every rank still runs its forward.

    The collate function returns None when every utterance of a batch was bad (the dataset logged why). A
    rank that skipped such a batch would miss the collectives of the forward and backward (DDP's gradient
    all-reduce, ZeRO-3's parameter gathers) and leave the other ranks waiting. So the caller runs the last
    usable batch again and gives its loss zero weight. The one place that decides this, for training and
    validation alike.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.last = None  # the last usable batch, on the device

    def __call__(self, batch):
        """``(batch moved to the device, True)`` for a usable batch; for a bad one (None) ``(the last usable
        batch, False)``, or ``(None, False)`` while there has been none."""
        if batch is None:
            return self.last, False
        self.last = batch.to(self.device, non_blocking=True)
        return self.last, True


def deepspeed_config(cfg: Config, env: DistInfo, device: torch.device) -> dict:
    """The DeepSpeed JSON with the batch, precision, clipping and optimizer entries set from our config."""
    path = Path(cfg.engine.deepspeed_config)
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: DeepSpeed config not found (engine.deepspeed_config)") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    for key in ("optimizer", "scheduler"):
        if ds.pop(key, None) is not None:
            log.info("DeepSpeed config: the %r section is replaced by the optim.* settings", key)
    ds.pop("train_batch_size", None)
    # Batches are duration-bucketed, so a "micro-batch size" in utterances is nominal.
    ds["train_micro_batch_size_per_gpu"] = 1
    ds["gradient_accumulation_steps"] = cfg.optim.grad_accum
    ds["gradient_clipping"] = cfg.optim.clip_grad_norm
    ds["zero_allow_untested_optimizer"] = True
    bf16 = resolve_precision(cfg, device) == torch.bfloat16
    ds["bf16"] = {"enabled": bf16}
    ds["fp16"] = {"enabled": False}
    ds.setdefault("steps_per_print", 10**9)
    ds.setdefault("wall_clock_breakdown", False)
    if device.type != "cuda":  # no pinned memory / offload tricks on CPU
        zero = ds.get("zero_optimization", {})
        for key in ("offload_optimizer", "offload_param"):
            zero.pop(key, None)
    return ds


def resolve_precision(cfg: Config, device: torch.device) -> torch.dtype:
    p = cfg.train.precision
    if p == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.bfloat16 if p == "bf16" else torch.float32


def create_engine(model: nn.Module, cfg: Config, env: DistInfo, device: torch.device, total_steps: int) -> Engine:
    kind = cfg.engine.type
    if kind == "single":
        if env.distributed:
            raise ConfigError(f"engine.type=single but WORLD_SIZE={env.world_size}; use engine.type=ddp or deepspeed")
        return Engine(model, cfg, env, device, total_steps)
    if kind == "ddp":
        if not env.distributed:
            log.info("engine.type=ddp with one process: running as a single process")
            return Engine(model, cfg, env, device, total_steps)
        return DDPEngine(model, cfg, env, device, total_steps)
    return DeepSpeedEngine(model, cfg, env, device, total_steps)
