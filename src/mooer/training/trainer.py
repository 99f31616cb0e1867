"""The training loop: data → engine → optimizer steps, with logging, validation, checkpoints and export.

A :class:`Trainer` runs a whole job from a :class:`~mooer.training.config.Config` on one process, under
``torchrun`` (DDP) or with DeepSpeed, in named phases (``setup``, ``train_step``, ``on_optimizer_step``,
``validate``, ``save``, ``finish``); :func:`train` is its entry point. Validation lives in
:mod:`mooer.training.validation`, the training state for resume in :mod:`mooer.training.resume`. What it fixes
relative to the original (docs/design.md §7):

- real epochs over the manifest (the original applied the epoch count twice); no broad ``except`` around
  the loop (the original ended an epoch silently on any error);
- equal batch counts on every rank (the sampler's contract) so collectives never deadlock;
- the loss is the model's token-mean cross-entropy over the answer tokens, as in the original;
- exact resume of weights, optimizer, scheduler, data position and RNGs (the original restored none);
- validation during training (the original had none): dev loss, token accuracy, and CER/WER/BLEU of greedy
  decodes made through the inference code itself;
- export on rank 0 only, from gathered parameters (the original exported from every rank, and under ZeRO-3
  empty partitions).

Outputs in ``train.exp_dir``: ``train.log``, ``metrics.jsonl`` (one line per optimizer step and per
validation), ``tb/`` (TensorBoard), ``checkpoints/``, ``config.yaml``, ``am.mvn`` (the CMVN in use),
``summary.json`` and ``export/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mooer.distributed import DistInfo, dist_info
from mooer.errors import ConfigError
from mooer.features import Cmvn, FeatureExtractor
from mooer.prompting import PromptBuilder
from mooer.training import validation
from mooer.training.config import Config
from mooer.training.engines import (
    BadBatchStandIn,
    Engine,
    create_engine,
    init_process_group,
    pick_device,
    resolve_precision,
)
from mooer.training.resume import (
    TrainState,
    latest_checkpoint,
    list_checkpoints,
    load_training_state,
    save_training_state,
)
from mooer.training.model import BuiltModel, build_model, set_train_mode

log = logging.getLogger("mooer.train")


@dataclass
class TrainResult:
    exp_dir: Path
    state: TrainState
    losses: dict[int, float] = field(default_factory=dict)  # step → loss (this process' view, global mean)
    validation: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)
    built: BuiltModel | None = None
    engine: Engine | None = None


# ---------------------------------------------------------------------------------------------- setup


def setup_logging(exp_dir: Path, env: DistInfo) -> None:
    """Rank 0 logs to ``exp_dir/train.log`` and stderr; other ranks only warnings, tagged with the rank."""
    logger = logging.getLogger("mooer")
    for h in list(logger.handlers):
        if getattr(h, "_mooer_train", False):
            logger.removeHandler(h)
            h.close()
    fmt = logging.Formatter(f"%(asctime)s | %(levelname)s | rank{env.rank} | %(name)s | %(message)s")
    handlers: list[logging.Handler] = []
    if env.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(exp_dir / "train.log", encoding="utf-8"))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if env.is_main else logging.WARNING)
    handlers.append(console)
    for h in handlers:
        h.setFormatter(fmt)
        h._mooer_train = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def compute_cmvn(utterances, num: int, seed: int) -> Cmvn:
    """Global mean/variance of the LFR features (before CMVN) of ``num`` utterances drawn with ``seed``.

    ``shift = -mean`` and ``scale = 1/std``, the convention of ``am.mvn`` (``(x + shift) * scale``).
    """
    from mooer.features import apply_lfr, kaldi_fbank

    order = np.random.default_rng(seed).permutation(len(utterances))[:num]
    total = None
    total_sq = None
    frames = 0
    used = 0
    for i in order:
        utt = utterances[int(i)]
        try:
            wave = utt.load_audio()
            feats = apply_lfr(kaldi_fbank(wave)).double()
        except Exception as e:  # noqa: BLE001 - a bad file is skipped here, the dataset reports it later
            log.warning("CMVN: skipping %s (%s)", utt.id, e)
            continue
        total = feats.sum(0) if total is None else total + feats.sum(0)
        total_sq = (feats**2).sum(0) if total_sq is None else total_sq + (feats**2).sum(0)
        frames += feats.shape[0]
        used += 1
    if not frames:
        raise ConfigError("model.cmvn=compute: no training utterance could be read")
    mean = total / frames
    var = (total_sq / frames - mean**2).clamp_min(1e-10)
    log.info("CMVN computed from %d utterances (%d LFR frames)", used, frames)
    return Cmvn(shift=(-mean).float(), scale=(1.0 / var.sqrt()).float())


def make_sampler(cfg: Config, durations, env: DistInfo, *, shuffle: bool, drop_last: bool):
    from mooer.data.sampler import DynamicBucketSampler, FixedSizeSampler

    d = cfg.data
    if d.sampler == "fixed":
        return FixedSizeSampler(len(durations), d.batch_size, shuffle=shuffle, seed=cfg.train.seed, rank=env.rank,
                                world_size=env.world_size, drop_last=drop_last)
    return DynamicBucketSampler(durations, max_seconds=d.max_seconds, max_utterances=d.max_utterances,
                                num_buckets=d.num_buckets, shuffle=shuffle, seed=cfg.train.seed, rank=env.rank,
                                world_size=env.world_size, drop_last=drop_last)


def read_utterances(path: str, cfg: Config, what: str):
    from mooer.data.manifest import read_manifest

    result = read_manifest(path, min_duration=cfg.data.min_duration, max_duration=cfg.data.max_duration)
    if result.skipped:
        log.info("%s manifest %s: skipped %s", what, path, dict(result.skipped))
    if not result.utterances:
        raise ConfigError(f"{path}: no usable utterance in the {what} manifest (skipped: {dict(result.skipped)})")
    return result.utterances


def make_dataset(utterances, cmvn: Cmvn, built: BuiltModel, cfg: Config, *, train: bool):
    from mooer.data.dataset import SpeechDataset, TaskMix

    augment = None
    if train and cfg.data.augment:
        from mooer.data.augment import AugmentConfig, Augmenter

        try:
            aug_cfg = AugmentConfig.from_dict(cfg.data.augment)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"data.augment: {e}") from None
        augment = Augmenter(aug_cfg, seed=cfg.train.seed) if aug_cfg.enabled else None
    try:
        task_mix = TaskMix(dict(cfg.data.tasks))
    except ValueError as e:
        raise ConfigError(f"data.tasks: {e}") from None
    unknown = sorted(t for t, w in cfg.data.tasks.items() if w > 0 and t not in built.prompts)
    if unknown:
        raise ConfigError(f"data.tasks {unknown} have no prompt in model.prompts ({sorted(built.prompts)})")
    prompts = PromptBuilder(built.tokenizer, built.prompts)
    return SpeechDataset(utterances, FeatureExtractor(cmvn), prompts, task_mix,
                         downsample=built.model.adapter.k, augment=augment, seed=cfg.train.seed)


def autocast_context(cfg: Config, device: torch.device, engine: Engine):
    dtype = resolve_precision(cfg, device)
    if dtype == torch.float32 or engine.kind == "deepspeed":  # DeepSpeed runs the module in bf16 itself
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------------------------------------ train


def _resolve_resume(cfg: Config, exp_dir: Path) -> Path | None:
    resume = cfg.train.resume
    if resume in (None, "", "none", "false"):
        if list_checkpoints(exp_dir):
            raise ConfigError(f"{exp_dir} already has checkpoints; resume with --resume (train.resume=auto), "
                              f"or choose another train.exp_dir")
        return None
    if resume == "auto":
        return latest_checkpoint(exp_dir)
    path = Path(resume)
    if not (path / "state.pt").is_file():
        raise ConfigError(f"train.resume={resume}: not a complete training checkpoint (no state.pt)")
    return path


def train(cfg: Config) -> TrainResult:
    """Run a training job (every rank calls this). Returns the final state on every rank."""
    return Trainer(cfg).run()


@dataclass
class _StepSums:
    """Sums over the micro-batches of the current accumulation group (this rank); reduced over the ranks and
    reset at each optimizer step."""

    loss: float = 0.0  # token-weighted cross-entropy
    tokens: float = 0.0
    utterances: int = 0
    seconds: float = 0.0
    padding: list[float] = field(default_factory=list)  # padding fraction of each usable micro-batch


@dataclass
class _LogWindow:
    """What the periodic log line reports: the micro-batches since the previous line (this rank)."""

    start: float = field(default_factory=time.time)
    utterances: int = 0
    seconds: float = 0.0
    ctc: list[float] = field(default_factory=list)  # auxiliary CTC losses
    align: list[float] = field(default_factory=list)  # guided-attention losses


class Trainer:
    """One training job in named phases, in the manner of a torchtune recipe::

        trainer = Trainer(cfg)
        trainer.setup()            # process group, logging, model, data, engine, resume
        trainer.train()            # train_step() per micro-batch, on_optimizer_step() per accumulation group
        result = trainer.finish()  # last checkpoint, validation, export, summary.json

    (:meth:`run` does the three.) :meth:`on_optimizer_step` reduces the step's sums over the ranks, logs
    them, and calls :meth:`validate` and :meth:`save` on their schedules. Every rank runs every phase:
    collectives stay in step because every rank gets the same number of batches (the sampler's contract) and
    runs a forward even for a batch with no usable utterance (:class:`~mooer.training.engines.BadBatchStandIn`).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def run(self) -> TrainResult:
        self.setup()
        self.train()
        return self.finish()

    # ------------------------------------------------------------------------------------------- setup

    def setup(self) -> None:
        cfg = self.cfg
        self.env = dist_info()
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        self.device = pick_device(cfg, self.env)
        init_process_group(cfg, self.env, self.device)
        self.exp_dir = Path(cfg.train.exp_dir)
        setup_logging(self.exp_dir, self.env)
        self.resume_from = _resolve_resume(cfg, self.exp_dir)
        seed_everything(cfg.train.seed)
        self._setup_model()
        seed_everything(cfg.train.seed + self.env.rank)  # dropout etc.; the model init used model.init_seed
        self._setup_data()
        self._setup_engine()
        self._setup_outputs()

    def _setup_model(self) -> None:
        self.built = build_model(self.cfg.model, self.device, resolve_precision(self.cfg, self.device))
        log.info("model: %s", {k: v for k, v in self.built.source.items() if k != "prompts"})
        log.info(self.built.parameter_summary())

    def _setup_data(self) -> None:
        """CMVN, the training loader and the dev loader (if ``data.dev``); rank 0 writes am.mvn and config.yaml."""
        cfg, env = self.cfg, self.env
        if not cfg.data.train:
            raise ConfigError("data.train: the training manifest is not set")
        train_utts = read_utterances(cfg.data.train, cfg, "training")
        cmvn_file = self.exp_dir / "am.mvn"
        self.cmvn = self.built.cmvn
        if cfg.model.cmvn == "compute":
            if cmvn_file.is_file():  # a resumed run keeps the CMVN it started with
                self.cmvn = Cmvn.from_file(cmvn_file)
            else:
                self.cmvn = compute_cmvn(train_utts, cfg.model.cmvn_utterances, cfg.train.seed)
        if self.cmvn is None:
            raise ConfigError("no CMVN: set model.cmvn to an am.mvn file or to 'compute'")
        self.built.cmvn = self.cmvn
        if env.is_main:
            from mooer.training.export import write_cmvn

            write_cmvn(self.cmvn, cmvn_file)
            (self.exp_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        self.train_set = make_dataset(train_utts, self.cmvn, self.built, cfg, train=True)
        self.sampler = make_sampler(cfg, self.train_set.durations, env, shuffle=cfg.data.shuffle,
                                    drop_last=cfg.data.drop_last)
        # The loader draws its worker base seed from its own generator, never from the global RNG, so that
        # re-creating the iterator on resume does not shift the dropout masks.
        self.loader = DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=self.train_set.collate_fn,
                                 num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(cfg.train.seed))
        self.dev_set = self.dev_loader = None
        if cfg.data.dev:
            self.dev_set = make_dataset(read_utterances(cfg.data.dev, cfg, "dev"), self.cmvn, self.built, cfg,
                                        train=False)
            dev_sampler = make_sampler(cfg, self.dev_set.durations, env, shuffle=False, drop_last=False)
            self.dev_loader = DataLoader(self.dev_set, batch_sampler=dev_sampler, collate_fn=self.dev_set.collate_fn,
                                         num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(0))

    def _setup_engine(self) -> None:
        """The number of optimizer steps, the engine (optimizer and schedule included) and, on resume, the
        training state it is restored to."""
        cfg = self.cfg
        self.accum = cfg.optim.grad_accum
        self.batches_per_epoch = len(self.sampler)
        self.planned_steps = (self.batches_per_epoch * cfg.train.epochs) // self.accum
        if cfg.train.max_steps is not None:
            self.planned_steps = min(self.planned_steps, cfg.train.max_steps)
        total_steps = cfg.optim.total_steps or self.planned_steps
        log.info("%d utterances, %d batches per epoch per rank, %d epochs, grad_accum %d, world size %d → %d "
                 "optimizer steps (schedule %s over %d)", len(self.train_set), self.batches_per_epoch, cfg.train.epochs,
                 self.accum, self.env.world_size, self.planned_steps, cfg.optim.schedule, total_steps)
        self.engine = create_engine(self.built.model, cfg, self.env, self.device, max(total_steps, 1))
        self.state = TrainState()
        if self.resume_from is not None:
            self.state, _ = load_training_state(self.engine, self.resume_from)
            log.info("resumed from %s: step %d, epoch %d, batch %d of the epoch", self.resume_from, self.state.step,
                     self.state.epoch, self.state.batches_in_epoch)

    def _setup_outputs(self) -> None:
        """metrics.jsonl (cut back to the resumed step), TensorBoard, the result and the per-step sums."""
        step = self.state.step
        self.metrics_file = self.exp_dir / "metrics.jsonl"
        if self.env.is_main:
            _truncate_metrics(self.metrics_file, step)
        self.writer = None
        if self.env.is_main and self.cfg.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.exp_dir / "tb"), purge_step=step + 1 if step else None)
        self.result = TrainResult(exp_dir=self.exp_dir, state=self.state, built=self.built, engine=self.engine)
        self.stand_in = BadBatchStandIn(self.device)  # kept across epochs: an epoch may start with a bad batch
        self.sums = _StepSums()

    # ------------------------------------------------------------------------------------------- train

    def train(self) -> None:
        """Epochs until the planned optimizer steps are taken; the gradients of an incomplete last
        accumulation group are dropped."""
        state = self.state
        set_train_mode(self.built, True)
        self.bar = None
        if self.env.is_main and self.cfg.train.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=self.planned_steps, initial=min(state.step, self.planned_steps), unit="step",
                            dynamic_ncols=True, desc="train")
        self.window = _LogWindow()
        done = state.step >= self.planned_steps
        while not done and state.epoch < self.cfg.train.epochs:
            done = self._train_epoch()
        if self.bar is not None:
            self.bar.close()
        if state.micro_step % self.accum:
            log.info("discarding the gradients of %d micro-batches that did not complete an accumulation group",
                     state.micro_step % self.accum)
            self.engine.discard_gradients()

    def _train_epoch(self) -> bool:
        """The rest of epoch ``state.epoch`` (all of it unless resumed inside it). Returns True when the
        planned steps were reached; the state then holds the sampler position for the final checkpoint."""
        state, epoch = self.state, self.state.epoch
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        if state.sampler and state.sampler.get("epoch") == epoch:
            self.sampler.load_state_dict(state.sampler)
        consumed = 0  # batches of this epoch taken by this loader (the sampler skips those taken before resume)
        for batch in self.loader:
            consumed += 1
            state.batches_in_epoch += 1
            boundary = (state.micro_step + 1) % self.accum == 0
            grad_norm = self.train_step(batch, boundary)
            if boundary and self.on_optimizer_step(epoch, grad_norm, consumed):
                state.sampler = self.sampler.state_dict(batches_consumed=consumed)
                if state.batches_in_epoch >= self.batches_per_epoch:
                    self._next_epoch()
                return True
        self._next_epoch()
        return False

    def _next_epoch(self) -> None:
        self.state.epoch += 1
        self.state.batches_in_epoch = 0
        self.state.sampler = {}

    def train_step(self, batch, boundary: bool) -> float | None:
        """One micro-batch: forward and backward, then the engine step, which on an accumulation boundary
        steps the optimizer and returns the gradient norm. ``batch`` None (every utterance was bad; the dataset
        logged why) runs the last usable batch with zero weight, so that the ranks' collectives stay in step."""
        batch, usable = self.stand_in(batch)
        if batch is None:
            raise ConfigError("the first training batch has no usable utterance; check the manifest and audio "
                              "(see the warnings above)")
        ctc_weight = self.cfg.model.ctc_weight
        with self.engine.accumulate(boundary):
            with self.autocast():
                out = self.engine.forward(batch.features, batch.lengths, batch.tokens,
                                          batch.transcript_ids if ctc_weight else None)
            if usable:
                loss = out.loss  # the reported loss: the LLM's cross-entropy
                total = self._objective(out, batch)
            else:
                loss = total = (out.loss + (out["ctc_loss"] if ctc_weight else 0.0)) * 0.0
            self.engine.backward(total)
        grad_norm = self.engine.step(boundary)
        self.state.micro_step += 1
        n_tok, n_utt = (batch.num_answer_tokens, len(batch)) if usable else (0, 0)
        self.sums.loss += float(loss.detach()) * n_tok
        self.sums.tokens += n_tok
        self.sums.utterances += n_utt
        self.window.utterances += n_utt
        if usable:
            self.sums.padding.append(batch.padding_fraction)
            self.sums.seconds += batch.audio_seconds
            self.window.seconds += batch.audio_seconds
        return grad_norm

    def _objective(self, out, batch) -> torch.Tensor:
        """What is minimised: the cross-entropy plus the weighted auxiliary CTC and guided-attention losses
        (whose values go to the log line)."""
        m = self.cfg.model
        total = out.loss
        if m.ctc_weight:
            self.window.ctc.append(float(out["ctc_loss"].detach()))
            total = out.loss + m.ctc_weight * out["ctc_loss"]
        if "align_loss" in out:
            self.window.align.append(float(out["align_loss"].detach()))
            total = total + m.align_weight * out["align_loss"]
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite loss {float(total)} at step {self.state.step}, "
                                     f"batch {batch.ids[:4]}")
        return total

    def on_optimizer_step(self, epoch: int, grad_norm: float | None, consumed: int) -> bool:
        """After an optimizer step: reduce the step's sums over the ranks, log them, then validate and save on
        their schedules (except after the last step, which :meth:`finish` handles). ``consumed``: batches of
        this epoch taken so far (the sampler position a checkpoint records). Returns True when the planned
        steps are done."""
        state, cfg = self.state, self.cfg
        state.step += 1
        loss, tokens, utterances, seconds = self.engine.all_reduce_sum(
            [self.sums.loss, self.sums.tokens, float(self.sums.utterances), self.sums.seconds])
        state.utterances += int(utterances)
        state.audio_seconds += seconds
        step_loss = loss / tokens if tokens else float("nan")  # nan: no usable utterance in the step
        self.result.losses[state.step] = step_loss
        self._log_step(epoch, step_loss, tokens, utterances, grad_norm)
        self.sums = _StepSums()
        done = state.step >= self.planned_steps
        if cfg.validation.every and state.step % cfg.validation.every == 0 and not done:
            self.validate()
        if cfg.train.save_every and state.step % cfg.train.save_every == 0 and not done:
            state.sampler = self.sampler.state_dict(batches_consumed=consumed)
            self.save()
        return done

    def _log_step(self, epoch: int, step_loss: float, tokens: float, utterances: float,
                  grad_norm: float | None) -> None:
        """metrics.jsonl, TensorBoard and the progress bar every step; the log line every ``train.log_every``."""
        step, lr, w = self.state.step, self.engine.lr, self.window
        now = time.time()
        utt_s = w.utterances * self.env.world_size / max(now - w.start, 1e-9)
        pad = float(np.mean(self.sums.padding)) if self.sums.padding else 0.0
        record = {"step": step, "epoch": epoch, "loss": step_loss, "lr": lr, "tokens": tokens,
                  "utterances": utterances, "padding": pad}
        if grad_norm is not None:
            record["grad_norm"] = grad_norm
        self._write_metrics(record)
        if self.writer is not None:
            if math.isfinite(step_loss):
                self.writer.add_scalar("train/loss", step_loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/padding_fraction", pad, step)
            if grad_norm is not None and math.isfinite(grad_norm):
                self.writer.add_scalar("train/grad_norm", grad_norm, step)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", utt_s=f"{utt_s:.1f}", pad=f"{pad:.2f}",
                                 refresh=False)
        if step % self.cfg.train.log_every == 0 or step == 1:
            if self.writer is not None:
                self.writer.add_scalar("train/utt_per_s", utt_s, step)
            log.info("epoch %d step %d loss %.4f lr %.3e utt/s %.1f audio-s/s %.1f pad %.2f%s", epoch + 1, step,
                     step_loss, lr, utt_s, w.seconds * self.env.world_size / max(now - w.start, 1e-9), pad,
                     ("" if grad_norm is None else f" grad_norm {grad_norm:.3f}")
                     + (f" ctc {sum(w.ctc) / len(w.ctc):.3f}" if w.ctc else "")
                     + (f" align {sum(w.align) / len(w.align):.3f}" if w.align else ""))
            self.window = _LogWindow(start=now)

    def _write_metrics(self, record: dict) -> None:
        if self.env.is_main:
            with self.metrics_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def autocast(self):
        return autocast_context(self.cfg, self.device, self.engine)

    # ------------------------------------------------------------------------- validate, save, finish

    def validate(self) -> None:
        """Validation on the dev set, if there is one (collective); logged to train.log, TensorBoard and
        metrics.jsonl, and kept in ``result.validation``."""
        if self.dev_loader is None:
            return
        t0 = time.time()
        res = validation.validate(self.engine, self.built, self.cmvn, self.dev_loader, self.dev_set, self.cfg,
                                  self.device, self.autocast)
        examples = res.pop("examples", [])
        self.result.validation = res
        step = self.state.step
        log.info("validation at step %d (%.1f s): %s", step, time.time() - t0,
                 ", ".join(f"{k}={v:.4g}" for k, v in res.items()))
        for ex in examples:
            log.info("  %s [%s] %r", ex["id"], ex["task"], ex["hyp"])
        if self.writer is not None:
            for k, v in res.items():
                self.writer.add_scalar(f"dev/{k}", v, step)
        self._write_metrics({"step": step, "validation": res})

    def save(self) -> None:
        """A training checkpoint of the current step, for exact resume (collective)."""
        save_training_state(self.engine, self.state, self.exp_dir, self.cfg.train.keep_last, self.cfg.to_dict())
        log.info("checkpoint step %d saved", self.state.step)

    def finish(self) -> TrainResult:
        """The final checkpoint (unless the run resumed at it and took no step), a last validation, the
        export, and summary.json with every rank's weight checksum."""
        state, result = self.state, self.result
        if self.resume_from is None or state.step > _checkpoint_step(self.resume_from):
            self.save()
        self.validate()
        if self.cfg.export.at_end:
            from mooer.training.export import export_model

            result.export = export_model(self.engine, self.built, self.cfg)
        checks = self.engine.all_gather_object(_checksum(self.engine))
        summary = {"step": state.step, "epoch": state.epoch, "micro_step": state.micro_step,
                   "utterances": state.utterances, "audio_seconds": state.audio_seconds,
                   "final_loss": result.losses.get(state.step), "validation": result.validation,
                   "export": result.export, "rank_checksums": checks, "world_size": self.env.world_size}
        if self.env.is_main:
            (self.exp_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                                       encoding="utf-8")
        if self.writer is not None:
            self.writer.close()
        log.info("done: %d optimizer steps, %d utterances, %.1f h of audio", state.step, state.utterances,
                 state.audio_seconds / 3600)
        return result


def _checkpoint_step(path: Path) -> int:
    try:
        return int(path.name.split("-")[-1])
    except ValueError:
        return -1


def _checksum(engine: Engine) -> float:
    """Sum of |trainable weights| (replicas must agree; ZeRO-3 partitions are gathered first)."""
    with torch.no_grad(), engine.gathered():
        return float(sum(p.detach().double().abs().sum() for p in engine.params))


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the metric lines up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
    if not path.is_file():
        return
    if step == 0:
        path.unlink()
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            continue
    path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
