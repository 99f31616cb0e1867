"""Training-only alignment helpers: CTC forced alignment and a guided-attention loss.

An LLM trained from scratch on audio prefixes tends to settle on attention heads that step through the
audio at a fixed rate (one audio token per text token), which only works when speech happens to have that
rate. :func:`guided_attention_loss` pulls one head, from each position that predicts a transcript token, to
the audio tokens where a CTC forced alignment (:func:`ctc_forced_align`) puts that token, so the head
learns to find what is said by content. Nothing here is used at inference.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch


def ctc_forced_align(log_probs: np.ndarray, target: Sequence[int], blank: int) -> Optional[np.ndarray]:
    """Viterbi CTC alignment of ``target`` to ``log_probs`` ``(T, C)``.

    Returns, per frame, the index into ``target`` of the token the best path emits there, or -1 on blank
    frames; ``None`` when no path fits (too few frames for the tokens and the blanks their repeats need).
    """
    frames, n = log_probs.shape[0], len(target)
    if n == 0:
        return None
    states = 2 * n + 1
    ext = np.full(states, blank, dtype=np.int64)
    ext[1::2] = target
    emit = log_probs[:, ext]  # (T, S)
    skip = np.zeros(states, dtype=bool)  # s may be entered from s - 2 (a token different from the last one)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    score = np.full(states, -np.inf)
    score[:2] = emit[0, :2]
    back = np.zeros((frames, states), dtype=np.int8)
    for t in range(1, frames):
        one = np.concatenate(([-np.inf], score[:-1]))
        two = np.where(skip, np.concatenate(([-np.inf, -np.inf], score[:-2])), -np.inf)
        cand = np.stack([score, one, two])
        step = cand.argmax(0)
        score = cand[step, np.arange(states)] + emit[t]
        back[t] = step
    last = states - 1 if states == 1 or score[-1] >= score[-2] else states - 2
    if not np.isfinite(score[last]):
        return None
    path = np.empty(frames, dtype=np.int64)
    s = last
    for t in range(frames - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])  # a Python int: s - np.int8 would be an int8 (NumPy 2) and overflow past 127
    return np.where(path % 2 == 1, (path - 1) // 2, -1)


def guided_attention_loss(attention: torch.Tensor, modality_mask: torch.Tensor, labels: torch.Tensor,
                          alignments: Sequence[Optional[np.ndarray]], ignore_index: int = -100) -> torch.Tensor:
    """Mean ``-log`` attention mass that the query predicting transcript token j puts on token j's frames.

    ``attention``: ``(B, S, S)`` probabilities of one head; ``modality_mask`` marks each row's audio span
    and ``labels`` its answer (the batch layout of :func:`mooer.prompting.collate_tokens`); ``alignments``:
    per row, per audio token, the transcript token index there (-1 = none), or None to leave the row out.
    The answer must start with the transcript (asr, asr_ast).
    """
    target = torch.zeros_like(attention, dtype=torch.bool)
    queries = torch.zeros(attention.shape[:2], dtype=torch.bool, device=attention.device)
    for i, align in enumerate(alignments):
        if align is None:
            continue
        audio_pos = modality_mask[i].nonzero().flatten()
        answer_pos = (labels[i] != ignore_index).nonzero().flatten()
        align = torch.as_tensor(align[: audio_pos.numel()], device=attention.device)
        frames = (align >= 0).nonzero().flatten()
        token = align[frames]
        keep = token < answer_pos.numel()
        frames, token = frames[keep], token[keep]
        query = answer_pos[token] - 1  # the position whose output predicts token j
        target[i, query, audio_pos[frames]] = True
        queries[i, query] = True
    if not queries.any():
        return attention.sum() * 0.0
    mass = (attention * target).sum(-1)[queries]
    return -torch.log(mass.clamp_min(1e-6)).mean()
