"""Joint CTC/attention decoding: the encoder's CTC head scores the LLM's hypotheses while they grow.

The CTC prefix score of Watanabe et al. (2017), as in ESPnet's ``CTCPrefixScore``: for a hypothesis ``g``
the forward variables ``r_n[t]`` / ``r_b[t]`` are the log-probabilities that the first ``t`` frames collapse
to ``g`` ending in a non-blank / blank frame; extending ``g`` by a label ``c`` gives

    psi(g + c) = log sum_t exp(phi[t - 1] + x[t, c])    (phi = r_n + r_b, or only r_b when c repeats g's last)

the log-probability of all CTC paths whose output *starts* with ``g + c``; ending ``g`` (EOS) scores the
log-probability of exactly ``g``. Each step, every hypothesis's ``pre_beam`` most likely next tokens (by the
LLM; at least twice the beams) are scored, and the beam search adds ``(1 - w) * log p_llm(c) + w * (psi(g + c) - psi(g))``, so a
finished hypothesis has ``(1 - w) log p_llm + w log p_ctc``. Other tokens get ``-inf``.

A *stop* token ends the transcript before EOS (the ``asr_ast`` separator); after it only the LLM scores.
This is a :class:`transformers.LogitsProcessor`, so Hugging Face beam search and greedy search drive it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

NEG_INF = float("-inf")


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
        self.x = x
        self.weight = weight
        self.num_beams = num_beams
        self.end_ids = set(end_ids)
        self.stop_ids = set(stop_ids)
        self.pre_beam = max(pre_beam, 2 * num_beams)
        self._finish_ids = torch.tensor(sorted(self.end_ids | self.stop_ids), dtype=torch.long)
        self._bank: _States | None = None  # the states of the prefixes the next step can see
        self._keys: dict[tuple[int, tuple[int, ...]], int] = {}  # (utterance, prefix) → row of _bank

    def _initial(self, b: int) -> _States:
        t_max = self.x.shape[1]
        return _States(torch.full((1, t_max), NEG_INF), torch.cumsum(self.x[b, :, self.blank], 0).unsqueeze(0),
                       torch.zeros(1), torch.tensor([-1]), torch.tensor([False]))

    def _lookup(self, b: int, prefix: tuple[int, ...]) -> _States:
        """One prefix's state: from the previous step, else rebuilt token by token (a 1-row ``_States``)."""
        row = self._keys.get((b, prefix))
        if row is None and prefix:
            row = self._keys.get((b, prefix[:-1]))
            if row is not None and not bool(self._bank.ended[row]):
                row = None
        if row is not None:  # found, or the parent is past the transcript (nothing changes any more)
            return self._bank[[row]]
        state = self._initial(b)
        for token in prefix:
            if not bool(state.ended[0]):
                state = self._advance(torch.tensor([b]), state, torch.tensor([[token]]))
        return state

    def _advance(self, rows: torch.Tensor, states: _States, labels: torch.Tensor) -> _States:
        """Extend N hypotheses (of utterances ``rows``) by K labels each: N * K states, hypothesis-major."""
        n, k = labels.shape
        t_max = self.x.shape[1]
        in_vocab = labels < self.blank
        safe = torch.where(in_vocab, labels, torch.zeros_like(labels))
        xs = self.x[rows.view(-1, 1, 1), torch.arange(t_max).view(1, -1, 1), safe.unsqueeze(1)]  # (N, T, K)
        r_n, r_b, psi = extend(xs, self.x[rows, :, self.blank], states.r_n, states.r_b, states.last,
                               states.last < 0, safe)
        finishing = torch.isin(labels, self._finish_ids)
        full = torch.logaddexp(states.r_n[:, -1], states.r_b[:, -1]).unsqueeze(1)  # log p_ctc(exactly g)
        psi = torch.where(finishing, full.expand_as(psi), psi)
        psi = torch.where(in_vocab | finishing, psi, torch.full_like(psi, NEG_INF))
        return _States(r_n.transpose(1, 2).reshape(n * k, t_max), r_b.transpose(1, 2).reshape(n * k, t_max),
                       psi.reshape(-1), torch.where(finishing, states.last.unsqueeze(1), labels).reshape(-1),
                       finishing.reshape(-1))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        log_probs = scores.float().log_softmax(dim=-1)  # greedy search passes raw logits, beam search log-probs
        out = (1.0 - self.weight) * log_probs
        prefixes = [tuple(row) for row in input_ids.tolist()]
        rows = [n // self.num_beams for n in range(len(prefixes))]
        found = [self._keys.get((b, p)) for b, p in zip(rows, prefixes)]
        if all(j is not None for j in found):
            states = self._bank[torch.tensor(found)]
        else:
            states = _States.cat([self._bank[[j]] if j is not None else self._lookup(b, p)
                                  for j, b, p in zip(found, rows, prefixes)])
        active = (~states.ended).nonzero().flatten()
        ended = states.ended.nonzero().flatten().tolist()
        keep = [states[ended]]
        keys = {(rows[n], prefixes[n]): i for i, n in enumerate(ended)}
        if len(active):
            k = min(self.pre_beam, scores.shape[-1])
            labels = log_probs[active].topk(k, dim=-1).indices  # (A, K)
            rows_a = torch.tensor(rows)[active]
            new = self._advance(rows_a, states[active], labels)
            old = states.psi[active].unsqueeze(1)
            psi = new.psi.view(-1, k)
            delta = torch.where(torch.isfinite(old), psi - old, torch.full_like(psi, NEG_INF))
            joint = out[active].gather(1, labels) + self.weight * delta
            out[active] = torch.full_like(out[active], NEG_INF).scatter(1, labels, joint)
            keep.append(new)
            base = len(ended)
            for a, (n, labels_n) in enumerate(zip(active.tolist(), labels.tolist())):
                for j, c in enumerate(labels_n):
                    keys[(rows[n], prefixes[n] + (c,))] = base + a * k + j
        self._bank, self._keys = _States.cat(keep), keys  # what the next step can look up
        return out.to(scores.dtype)
