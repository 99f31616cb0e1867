"""The map-style training dataset and its collate function.

``SpeechDataset[i]`` turns manifest utterance ``i`` into a :class:`Sample` — audio loaded (resampled and
downmixed), optionally augmented, featurised (fbank → LFR → CMVN, :mod:`mooer.features`) and tokenised
(prompt and answer from :class:`mooer.prompting.PromptBuilder`, the same code inference uses). Which task an
utterance trains is decided by :class:`TaskMix`. :func:`collate` lays a batch out with
:func:`mooer.prompting.collate_tokens` and :func:`mooer.prompting.pad_features` (one batching code path for
training and inference; the original had two, which could drift apart).

Typical use (featurisation runs in the DataLoader workers)::

    dataset = SpeechDataset(manifest.utterances, features, prompts, TaskMix({"asr": 1, "ast": 1}))
    sampler = DynamicBucketSampler(dataset.durations, max_seconds=240, rank=rank, world_size=world)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate_fn, num_workers=4)
    for epoch in ...:
        sampler.set_epoch(epoch); dataset.set_epoch(epoch)   # with workers, set before iter(loader)
        for batch in loader:          # TrainBatch, or None when every sample of the batch was bad
            ...
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from mooer.errors import AudioError
from mooer.features import SAMPLE_RATE, FeatureExtractor, audio_tokens
from mooer.prompting import PromptBuilder, TokenBatch, collate_tokens, pad_features
from mooer.tasks import MULTITASK_SEPARATOR, TASKS, join_multitask
from mooer.data.augment import AugmentConfig, Augmenter
from mooer.data.manifest import Utterance
from mooer.data.sampler import padding_fraction

__all__ = ["TaskMix", "Sample", "TrainBatch", "SpeechDataset", "collate", "stable_uniform"]

logger = logging.getLogger("mooer.data")


def stable_uniform(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts`` (same in every process and Python run)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass
class TaskMix:
    """Which task each utterance trains, and its target text.

    - An explicit ``task`` in the manifest wins.
    - An utterance without a translation can only train ``asr``.
    - Otherwise the task is drawn from ``weights`` (e.g. ``{"asr": 1, "ast": 1, "asr_ast": 1}``; tasks with
      weight 0 or absent are never drawn), deterministically from ``(seed, epoch, utterance id)``, so a resumed
      run draws the same tasks. Use one TaskMix per corpus to weight corpora differently.

    Targets: ``asr`` → text, ``ast`` → translation, ``asr_ast`` → ``text + separator + translation``
    (default separator "\\n", as the released multitask model expects; never the EOS token, which would
    teach the model to stop after the transcript).
    """

    weights: Mapping[str, float] = field(default_factory=lambda: {"asr": 1.0})
    separator: str = MULTITASK_SEPARATOR

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks in the task mix: {sorted(unknown)} (known: {list(TASKS)})")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"task weights must be non-negative, got {dict(self.weights)}")
        self._choices = [(t, float(w)) for t, w in self.weights.items() if w > 0]
        if not self._choices:
            raise ValueError("the task mix needs at least one task with a positive weight")
        self._total = sum(w for _, w in self._choices)

    def choose(self, utt: Utterance, *, seed: int = 0, epoch: int = 0) -> str:
        """The task ``utt`` trains in ``epoch``."""
        if utt.task is not None:
            return utt.task
        if utt.translation is None:
            return "asr"
        point = stable_uniform("task", seed, epoch, utt.id) * self._total
        for task, weight in self._choices:
            point -= weight
            if point < 0:
                return task
        return self._choices[-1][0]

    def target(self, utt: Utterance, task: str) -> str:
        """The answer text of ``utt`` for ``task`` (raises ``ValueError`` if it needs a missing translation)."""
        if task == "asr":
            return utt.text
        if utt.translation is None:
            raise ValueError(f"{utt.id}: task {task} needs a translation")
        if task == "ast":
            return utt.translation
        if task == "asr_ast":
            return join_multitask(utt.text, utt.translation, self.separator)
        raise ValueError(f"unknown task {task!r}")


@dataclass
class Sample:
    """One featurised, tokenised utterance."""

    id: str
    features: torch.Tensor
    """``(T6, 560)`` float32, CMVN-normalised LFR features."""
    audio_len: int
    """LLM audio tokens ``floor(T6 / downsample)``."""
    prompt_ids: list[int]
    answer_ids: list[int]
    """Answer tokens followed by eos."""
    task: str
    duration: float
    """Seconds of audio (after speed perturbation)."""
    transcript_ids: Optional[list[int]] = None
    """The transcript's tokens (no eos) for tasks that write it first (asr, asr_ast): the target of the
    optional auxiliary CTC loss on the encoder. None for ast."""


@dataclass
class TrainBatch:
    """A collated batch (the official layout, docs/design.md §4).

    ``tokens.input_ids`` has ``-1`` on audio positions; ``tokens.labels`` is ``IGNORE_INDEX`` everywhere but
    on the answer tokens and the final eos. ``lengths`` are the true T6 feature lengths (int32).
    """

    ids: list[str]
    tasks: list[str]
    features: torch.Tensor
    """``(B, T6max, 560)`` float32, right-padded with 0.0."""
    lengths: torch.Tensor
    """``(B,)`` int32."""
    tokens: TokenBatch
    num_answer_tokens: int
    """Tokens that carry a label (answers + eos), summed over the batch."""
    padding_fraction: float
    """Share of the feature frames that are padding."""
    audio_seconds: float = 0.0
    num_skipped: int = 0
    """Samples of this batch dropped because they were bad (see ``SpeechDataset.skipped``)."""
    transcript_ids: list = field(default_factory=list)
    """Per row: the transcript's token ids, or None (ast rows); see :attr:`Sample.transcript_ids`."""

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device, non_blocking: bool = False) -> "TrainBatch":
        """A copy with the tensors on ``device``."""
        tokens = self.tokens
        moved = TokenBatch(
            tokens.input_ids.to(device, non_blocking=non_blocking),
            tokens.attention_mask.to(device, non_blocking=non_blocking),
            tokens.modality_mask.to(device, non_blocking=non_blocking),
            None if tokens.labels is None else tokens.labels.to(device, non_blocking=non_blocking),
        )
        return TrainBatch(
            ids=self.ids,
            tasks=self.tasks,
            features=self.features.to(device, non_blocking=non_blocking),
            lengths=self.lengths.to(device, non_blocking=non_blocking),
            tokens=moved,
            num_answer_tokens=self.num_answer_tokens,
            padding_fraction=self.padding_fraction,
            audio_seconds=self.audio_seconds,
            num_skipped=self.num_skipped,
            transcript_ids=self.transcript_ids,
        )

    def pin_memory(self) -> "TrainBatch":
        """Called by ``DataLoader(pin_memory=True)``."""
        tokens = self.tokens
        pinned = TokenBatch(
            tokens.input_ids.pin_memory(),
            tokens.attention_mask.pin_memory(),
            tokens.modality_mask.pin_memory(),
            None if tokens.labels is None else tokens.labels.pin_memory(),
        )
        return TrainBatch(self.ids, self.tasks, self.features.pin_memory(), self.lengths.pin_memory(), pinned,
                          self.num_answer_tokens, self.padding_fraction, self.audio_seconds, self.num_skipped,
                          self.transcript_ids)


def collate(samples: Sequence[Optional[Sample]], *, pad_id: int) -> Optional[TrainBatch]:
    """Collate samples into a :class:`TrainBatch`; ``None`` samples (bad items) are dropped and counted.

    Returns ``None`` when every sample was bad. In distributed training the caller must still take part in
    the step's collectives (e.g. with a zero loss) so that ranks stay in lockstep.
    """
    good = [s for s in samples if s is not None]
    if not good:
        return None
    features, lengths = pad_features([s.features for s in good])
    tokens = collate_tokens(
        [s.audio_len for s in good], [s.prompt_ids for s in good], pad_id, [s.answer_ids for s in good]
    )
    return TrainBatch(
        ids=[s.id for s in good],
        tasks=[s.task for s in good],
        features=features,
        lengths=lengths,
        tokens=tokens,
        num_answer_tokens=sum(len(s.answer_ids) for s in good),
        padding_fraction=padding_fraction(lengths.tolist()),
        audio_seconds=sum(s.duration for s in good),
        num_skipped=len(samples) - len(good),
        transcript_ids=[s.transcript_ids for s in good],
    )


class SpeechDataset(Dataset):
    """Map-style dataset over manifest utterances (picklable: safe to use with DataLoader workers).

    ``__getitem__`` returns a :class:`Sample`, or ``None`` for a bad item — unreadable audio (including a
    missing file, shard or member), audio too short for one LLM audio token (the model would see only
    text), an answer longer than ``max_answer_tokens`` (eos included), a forced task without translation.
    The reason is counted in :attr:`skipped` *of the process that loaded it* (each DataLoader worker has its
    own copy; the batch reports how many it dropped in ``TrainBatch.num_skipped``) and logged. Other
    exceptions propagate.

    ``augment``: an :class:`~mooer.data.augment.AugmentConfig` (wrapped with this dataset's ``seed``; ignored
    when nothing is enabled) or a ready :class:`~mooer.data.augment.Augmenter`.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        features: FeatureExtractor,
        prompts: PromptBuilder,
        task_mix: Optional[TaskMix] = None,
        *,
        downsample: int = 2,
        augment: Union[AugmentConfig, Augmenter, None] = None,
        seed: int = 0,
        max_answer_tokens: Optional[int] = None,
    ) -> None:
        self.utterances = list(utterances)
        self.features = features
        self.prompts = prompts
        self.task_mix = task_mix if task_mix is not None else TaskMix()
        self.downsample = downsample
        if isinstance(augment, AugmentConfig):
            augment = Augmenter(augment, seed=seed) if augment.enabled else None
        self.augment: Optional[Augmenter] = augment
        self.seed = seed
        self.max_answer_tokens = max_answer_tokens
        self.epoch = 0
        self.skipped: collections.Counter = collections.Counter()

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def durations(self) -> list[float]:
        """Manifest durations, for the batch sampler."""
        return [u.duration for u in self.utterances]

    @property
    def collate_fn(self) -> functools.partial:
        """:func:`collate` bound to this tokenizer's pad id (picklable, for ``DataLoader(collate_fn=)``)."""
        return functools.partial(collate, pad_id=self.prompts.pad_id)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (task draws and augmentation depend on it). With DataLoader workers, call it
        before ``iter(loader)`` (workers copy the dataset when the iteration starts, unless persistent)."""
        self.epoch = int(epoch)

    def task_of(self, index: int) -> str:
        """The task utterance ``index`` trains in the current epoch."""
        return self.task_mix.choose(self.utterances[index], seed=self.seed, epoch=self.epoch)

    def _skip(self, utt: Utterance, reason: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        logger.warning("skipping %s: %s%s", utt.id, reason, f" ({detail})" if detail else "")

    def __getitem__(self, index: int) -> Optional[Sample]:
        utt = self.utterances[index]
        task = self.task_of(index)
        try:
            answer = self.task_mix.target(utt, task)
        except ValueError as exc:
            self._skip(utt, "missing translation", str(exc))
            return None
        answer_ids = self.prompts.answer_ids(answer)
        if self.max_answer_tokens is not None and len(answer_ids) > self.max_answer_tokens:
            self._skip(utt, "answer too long", f"{len(answer_ids)} tokens")
            return None
        try:
            waveform = utt.load_audio(SAMPLE_RATE)
        except (AudioError, OSError) as exc:
            self._skip(utt, "unreadable audio", str(exc))
            return None
        if self.augment is not None:
            waveform = self.augment.waveform(waveform, key=utt.id, epoch=self.epoch)
        num_frames = self.features.num_frames(waveform.shape[0])
        if audio_tokens(num_frames, self.downsample) == 0:
            self._skip(utt, "too short", f"{waveform.shape[0] / SAMPLE_RATE:.3f} s gives no audio token")
            return None
        feats = self.features(waveform)
        if self.augment is not None:
            feats = self.augment.features(feats, key=utt.id, epoch=self.epoch)
        return Sample(
            id=utt.id,
            features=feats,
            audio_len=audio_tokens(feats.shape[0], self.downsample),
            prompt_ids=list(self.prompts.prompt_ids(task)),
            answer_ids=answer_ids,
            task=task,
            duration=waveform.shape[0] / SAMPLE_RATE,
            transcript_ids=(self.prompts.answer_ids(utt.text)[:-1] if task in ("asr", "asr_ast") else None),
        )

