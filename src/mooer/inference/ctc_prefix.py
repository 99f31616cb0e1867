"""Joint CTC/attention decoding: the encoder's CTC head scores the LLM's hypotheses while they grow.

The CTC prefix score of Watanabe et al. (2017), as in ESPnet's ``CTCPrefixScore``: for a hypothesis ``g``
the forward variables ``r_n[t]`` / ``r_b[t]`` are the log-probabilities that the first ``t`` frames collapse
to ``g`` ending in a non-blank / blank frame; extending ``g`` by a label ``c`` gives

    psi(g + c) = log sum_t exp(phi[t - 1] + x[t, c])    (phi = r_n + r_b, or only r_b when c repeats g's last)

the log-probability of all CTC paths whose output *starts* with ``g + c``; ending ``g`` (EOS) scores the
log-probability of exactly ``g``. Each step, every hypothesis's ``pre_beam`` most likely next tokens (by the
LLM; at least twice the beams) are scored, and the beam search adds
``(1 - w) * log p_llm(c) + w * (psi(g + c) - psi(g))``, so a finished hypothesis has
``(1 - w) log p_llm + w log p_ctc``. Other tokens get ``-inf``.

A *stop* token ends the transcript before EOS (the ``asr_ast`` separator); after it only the LLM scores.
This is a :class:`transformers.LogitsProcessor`, so Hugging Face beam search and greedy search drive it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

NEG_INF = float("-inf")


def ctc_best_path(log_probs: torch.Tensor, lengths: torch.Tensor | None = None) -> list[list[int]]:
    """Greedy (best-path) CTC decoding: per row, the most likely class of each of its first ``lengths[i]``
    frames, repeats merged, blanks (the last class, as in ``MooERNetwork.ctc_log_probs``) removed.

    ``log_probs``: (B, T, C); ``lengths``: (B,) valid frames (None = all ``T``).
    """
    blank = log_probs.shape[-1] - 1
    best = log_probs.argmax(-1).cpu()
    out = []
    for i in range(best.shape[0]):
        row = best[i, : None if lengths is None else int(lengths[i])]
        merged = torch.unique_consecutive(row)
        out.append(merged[merged != blank].tolist())
    return out


@dataclass
class _States:
    """CTC state of M hypotheses: forward variables ``r_n``, ``r_b`` (M, T), log prefix score ``psi`` (M,),
    last label ``last`` (M,; -1 = none yet) and ``ended`` (M,): past EOS or the stop token, nothing changes."""

    r_n: torch.Tensor
    r_b: torch.Tensor
    psi: torch.Tensor
    last: torch.Tensor
    ended: torch.Tensor

    def __getitem__(self, index) -> "_States":
        return _States(self.r_n[index], self.r_b[index], self.psi[index], self.last[index], self.ended[index])

    @staticmethod
    def cat(parts: list["_States"]) -> "_States":
        return _States(*(torch.cat([getattr(p, f) for p in parts]) for f in ("r_n", "r_b", "psi", "last", "ended")))


def extend(xs: torch.Tensor, x_blank: torch.Tensor, r_n: torch.Tensor, r_b: torch.Tensor, last: torch.Tensor,
           empty: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Extend N hypotheses by K labels each.

    ``xs``: (N, T, K) CTC log-probabilities of the labels in each hypothesis's utterance, ``x_blank``: (N, T)
    those of blank (frames past the utterance's length padded with -inf for labels and 0 for blank, which
    leaves every score unchanged); ``r_n``, ``r_b``: (N, T); ``last``: (N,) last label (-1 if none);
    ``empty``: (N,) bool, hypothesis has no label yet; ``labels``: (N, K).
    Returns the extended ``r_n``, ``r_b`` (N, T, K) and ``psi`` (N, K).
    """
    n, t_max, _ = xs.shape
    x_blank = x_blank.unsqueeze(-1)  # (N, T, 1)
    r_sum = torch.logaddexp(r_n, r_b).unsqueeze(-1)  # (N, T, 1)
    phi = torch.where(labels.unsqueeze(1) == last.view(n, 1, 1), r_b.unsqueeze(-1), r_sum)  # (N, T, K)
    new_n = torch.full_like(xs, NEG_INF)
    new_b = torch.full_like(xs, NEG_INF)
    new_n[:, 0] = torch.where(empty.view(n, 1), xs[:, 0], torch.full_like(xs[:, 0], NEG_INF))
    # psi: the prefix is complete at the first frame of its new label (all frames at once)
    psi = torch.logaddexp(new_n[:, 0], torch.logsumexp(phi[:, :-1] + xs[:, 1:], dim=1)) if t_max > 1 else new_n[:, 0]
    for t in range(1, t_max):
        new_n[:, t] = torch.logaddexp(new_n[:, t - 1], phi[:, t - 1]) + xs[:, t]
        new_b[:, t] = torch.logaddexp(new_n[:, t - 1], new_b[:, t - 1]) + x_blank[:, t]
    return new_n, new_b, psi


class CTCPrefixScorer(LogitsProcessor):
    """Adds CTC prefix scores to the LLM's next-token scores (see the module docstring).

    ``log_probs``: (B, T, C) CTC log-probabilities, blank = class C - 1; ``lengths``: (B,) valid frames;
    ``num_beams``: hypotheses per utterance (rows of ``input_ids`` are utterance-major); ``end_ids``: tokens
    that end the hypothesis (EOS); ``stop_ids``: tokens that end the transcript but not the output.
    """

    def __init__(self, log_probs: torch.Tensor, lengths: torch.Tensor, weight: float, num_beams: int,
                 end_ids: set[int], stop_ids: set[int] = frozenset(), pre_beam: int = 256):
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"CTC weight must be in (0, 1], got {weight}")
        x = log_probs.detach().float().cpu()
        frames = torch.arange(x.shape[1])
        beyond = frames.unsqueeze(0) >= lengths.cpu().view(-1, 1)  # (B, T)
        self.blank = x.shape[-1] - 1
        x = x.masked_fill(beyond.unsqueeze(-1), NEG_INF)
        x[:, :, self.blank] = x[:, :, self.blank].masked_fill(beyond, 0.0)
        self.x_by_class = x.transpose(1, 2).contiguous()  # (B, C, T): a label's frames in one row
        self.weight = weight
        self.num_beams = num_beams
        self.end_ids = set(end_ids)
        self.stop_ids = set(stop_ids)
        self.pre_beam = max(pre_beam, 2 * num_beams)
        self._finish_ids = torch.tensor(sorted(self.end_ids | self.stop_ids), dtype=torch.long)
        # what the next step can look up: the candidates of the active hypotheses (kept as computed, picked
        # when chosen) and the hypotheses already past the transcript
        self._candidates: _Candidates | None = None
        self._parents: dict[tuple[int, tuple[int, ...]], int] = {}  # (utterance, prefix) → candidates row
        self._done: _States | None = None
        self._done_keys: dict[tuple[int, tuple[int, ...]], int] = {}  # (utterance, prefix) → _done row

    def _initial(self, b: int) -> _States:
        blank = self.x_by_class[b, self.blank]
        return _States(torch.full((1, blank.shape[0]), NEG_INF), torch.cumsum(blank, 0).unsqueeze(0),
                       torch.zeros(1), torch.tensor([-1]), torch.tensor([False]))

    def _rebuild(self, b: int, prefix: tuple[int, ...]) -> _States:
        """A prefix's state computed token by token (a 1-row ``_States``; only when not found)."""
        state = self._initial(b)
        for token in prefix:
            if not bool(state.ended[0]):
                state = self._advance(torch.tensor([b]), state, torch.tensor([[token]])).pick([0], [0])
        return state

    def _lookup(self, rows: list[int], prefixes: list[tuple[int, ...]]) -> _States:
        """The states of the hypotheses: a candidate of the previous step, a hypothesis past its transcript
        (its parent's state), or rebuilt."""
        picked, done, rebuilt = [], [], []  # (position, row[, token]) per source
        for n, (b, p) in enumerate(zip(rows, prefixes)):
            parent = (b, p[:-1])
            if p and parent in self._parents:
                picked.append((n, self._parents[parent], p[-1]))
            elif p and parent in self._done_keys:
                done.append((n, self._done_keys[parent]))
            else:
                rebuilt.append(n)
        parts, order = [], []
        if picked:
            a = torch.tensor([r for _, r, _ in picked])
            tokens = torch.tensor([t for _, _, t in picked])
            match = self._candidates.labels[a] == tokens.unsqueeze(1)
            found = match.any(dim=1)
            parts.append(self._candidates.pick(a[found], match[found].float().argmax(dim=1)))
            order += [n for (n, _, _), f in zip(picked, found.tolist()) if f]
            # a token the scorer did not propose cannot be chosen (it scored -inf); rebuilt if it ever is
            rebuilt += [n for (n, _, _), f in zip(picked, found.tolist()) if not f]
        if done:
            parts.append(self._done[[r for _, r in done]])
            order += [n for n, _ in done]
        for n in rebuilt:
            parts.append(self._rebuild(rows[n], prefixes[n]))
            order.append(n)
        states = _States.cat(parts)
        return states[torch.argsort(torch.tensor(order))]

    def _advance(self, rows: torch.Tensor, states: _States, labels: torch.Tensor) -> "_Candidates":
        """Extend N hypotheses (of utterances ``rows``) by K labels each."""
        in_vocab = labels < self.blank
        safe = torch.where(in_vocab, labels, torch.zeros_like(labels))
        xs = self.x_by_class[rows.unsqueeze(1), safe].transpose(1, 2).contiguous()  # (N, T, K)
        r_n, r_b, psi = extend(xs, self.x_by_class[rows, self.blank], states.r_n, states.r_b, states.last,
                               states.last < 0, safe)
        finishing = torch.isin(labels, self._finish_ids)
        full = torch.logaddexp(states.r_n[:, -1], states.r_b[:, -1]).unsqueeze(1)  # log p_ctc(exactly g)
        psi = torch.where(finishing, full.expand_as(psi), psi)
        psi = torch.where(in_vocab | finishing, psi, torch.full_like(psi, NEG_INF))
        last = torch.where(finishing, states.last.unsqueeze(1), labels)
        return _Candidates(labels, r_n, r_b, psi, last, finishing)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        log_probs = scores.float().log_softmax(dim=-1)  # greedy search passes raw logits, beam search log-probs
        out = (1.0 - self.weight) * log_probs
        prefixes = [tuple(row) for row in input_ids.tolist()]
        rows = [n // self.num_beams for n in range(len(prefixes))]
        states = self._lookup(rows, prefixes)
        active = (~states.ended).nonzero().flatten()
        ended = states.ended.nonzero().flatten().tolist()
        self._done = states[ended]
        self._done_keys = {(rows[n], prefixes[n]): i for i, n in enumerate(ended)}
        self._candidates, self._parents = None, {}
        if len(active):
            k = min(self.pre_beam, scores.shape[-1])
            labels = log_probs[active].topk(k, dim=-1).indices  # (A, K)
            new = self._advance(torch.tensor(rows)[active], states[active], labels)
            old = states.psi[active].unsqueeze(1)
            delta = torch.where(torch.isfinite(old), new.psi - old, torch.full_like(new.psi, NEG_INF))
            joint = out[active].gather(1, labels) + self.weight * delta
            out[active] = torch.full_like(out[active], NEG_INF).scatter(1, labels, joint)
            self._candidates = new
            self._parents = {(rows[n], prefixes[n]): a for a, n in enumerate(active.tolist())}
        return out.to(scores.dtype)


@dataclass
class _Candidates:
    """N hypotheses extended by K labels each: ``labels`` (N, K), forward variables ``r_n``, ``r_b`` (N, T, K),
    and per candidate ``psi``, ``last``, ``ended`` (N, K)."""

    labels: torch.Tensor
    r_n: torch.Tensor
    r_b: torch.Tensor
    psi: torch.Tensor
    last: torch.Tensor
    ended: torch.Tensor

    def pick(self, rows, columns) -> _States:
        """The states of candidates ``(rows[i], columns[i])``."""
        rows, columns = torch.as_tensor(rows), torch.as_tensor(columns)
        return _States(self.r_n[rows, :, columns], self.r_b[rows, :, columns], self.psi[rows, columns],
                       self.last[rows, columns], self.ended[rows, columns])
