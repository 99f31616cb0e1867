"""Prompts, sequence construction and batch collation — shared by training and inference.

One source of truth (the official layout, docs/design.md §4): the audio embeddings come *before* the Qwen
chat template, every task prompt ends with one trailing space, and a batch is laid out as

    row i = [pad] * (PLmax - PL_i) ++ [-1] * L_i ++ prompt_ids_i ++ answer_ids_i ++ [pad] * (ALmax - AL_i)

i.e. the audio+prompt block is left-padded and the answer block right-padded, so every answer starts at
column PLmax. ``-1`` marks audio placeholder positions; ``modality_mask`` is True on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)

#: The official task prompts, trailing space included (it is part of what the released models saw).
OFFICIAL_PROMPTS: dict[str, str] = {
    "asr": "Transcribe speech to text. ",
    "ast": "Translate speech to english text. ",
}

#: Prompts of models trained by this project: the official two plus a distinct multitask prompt,
#: so one model can do asr, ast and asr_ast.
DEFAULT_PROMPTS: dict[str, str] = {
    **OFFICIAL_PROMPTS,
    "asr_ast": "Transcribe speech to text, then translate it to english. ",
}

#: The released ``asr_ast_mtl`` model writes "transcript\ntranslation" when given the *ast* prompt.
OFFICIAL_MTL_PROMPTS: dict[str, str] = {**OFFICIAL_PROMPTS, "asr_ast": OFFICIAL_PROMPTS["ast"]}

AUDIO_PLACEHOLDER = -1
IGNORE_INDEX = -100


@dataclass
class PromptBuilder:
    """Turns tasks and answers into token ids with one tokenizer and one prompt table."""

    tokenizer: object
    prompts: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    template: str = TEMPLATE

    def __post_init__(self) -> None:
        self._cache: dict[str, list[int]] = {}
        self.pad_id: int = self.tokenizer.pad_token_id
        self.eos_id: int = self.tokenizer.eos_token_id
        if self.pad_id is None or self.eos_id is None:
            raise ValueError("the tokenizer needs a pad token and an eos token (Qwen: <|endoftext|>, <|im_end|>)")

    def prompt_ids(self, task: str) -> list[int]:
        """Token ids of the full chat prompt of ``task`` (cached)."""
        if task not in self._cache:
            if task not in self.prompts:
                raise ValueError(f"unknown task {task!r}; this model knows {sorted(self.prompts)}")
            text = self.template.format(self.prompts[task])
            self._cache[task] = list(self.tokenizer.encode(text, add_special_tokens=False))
        return self._cache[task]

    def answer_ids(self, answer: str) -> list[int]:
        """Target ids: the answer encoded on its own (never jointly with the prompt: a BPE merge across the
        boundary would shift the labels) + eos."""
        return list(self.tokenizer.encode(answer, add_special_tokens=False)) + [self.eos_id]


@dataclass
class TokenBatch:
    """The token side of a batch (the layout above)."""

    input_ids: torch.Tensor  # (B, S) int64, -1 at audio positions, pad at pads
    attention_mask: torch.Tensor  # (B, S) bool
    modality_mask: torch.Tensor  # (B, S) bool, True on the audio span
    labels: torch.Tensor | None  # (B, S) int64, IGNORE_INDEX outside answers (training only)

    def to(self, device) -> "TokenBatch":
        return TokenBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.modality_mask.to(device),
            None if self.labels is None else self.labels.to(device),
        )


def collate_tokens(
    audio_lengths: Sequence[int],
    prompt_ids: Sequence[Sequence[int]],
    pad_id: int,
    answer_ids: Sequence[Sequence[int]] | None = None,
) -> TokenBatch:
    """Lay out a batch: left-padded audio+prompt block, right-padded answer block."""
    n = len(audio_lengths)
    answers = answer_ids if answer_ids is not None else [[]] * n
    pl = [int(a) + len(p) for a, p in zip(audio_lengths, prompt_ids)]
    al = [len(a) for a in answers]
    pl_max, al_max = max(pl), max(al)
    width = pl_max + al_max
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.bool)
    modality = torch.zeros((n, width), dtype=torch.bool)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long) if answer_ids is not None else None
    for i, (audio_len, prompt, answer) in enumerate(zip(audio_lengths, prompt_ids, answers)):
        start = pl_max - pl[i]
        row = [AUDIO_PLACEHOLDER] * int(audio_len) + list(prompt) + list(answer)
        input_ids[i, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, start : start + len(row)] = True
        modality[i, start : start + int(audio_len)] = True
        if labels is not None and answer:
            labels[i, pl_max : pl_max + len(answer)] = torch.tensor(answer, dtype=torch.long)
    return TokenBatch(input_ids, attention, modality, labels)


def pad_features(features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (T6_i, D) feature matrices with 0.0 to (B, T6max, D); return them and the lengths."""
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.int32)
    out = features[0].new_zeros((len(features), int(lengths.max()), features[0].shape[1]))
    for i, f in enumerate(features):
        out[i, : f.shape[0]] = f
    return out, lengths
