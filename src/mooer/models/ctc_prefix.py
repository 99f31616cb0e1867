"""Joint CTC/attention decoding: the encoder's CTC head scores the LLM's hypotheses while they grow.

The CTC prefix score of Watanabe et al. (2017), as in ESPnet's ``CTCPrefixScore``: for a hypothesis ``g``
the forward variables ``r_n[t]`` / ``r_b[t]`` are the log-probabilities that the first ``t`` frames collapse
to ``g`` ending in a non-blank / blank frame; extending ``g`` by a label ``c`` gives

    psi(g + c) = log sum_t exp(phi[t - 1] + x[t, c])    (phi = r_n + r_b, or only r_b when c repeats g's last)

the log-probability of all CTC paths whose output *starts* with ``g + c``; ending ``g`` (EOS) scores the
log-probability of exactly ``g``. Each step, every hypothesis's ``pre_beam`` most likely next tokens (by the
LLM) are scored, and the beam search adds ``(1 - w) * log p_llm(c) + w * (psi(g + c) - psi(g))``, so a
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
class _Prefix:
    """CTC forward variables of one hypothesis (``r_n``, ``r_b``: (T,)), its score ``psi`` and last label."""

    r_n: torch.Tensor | None
    r_b: torch.Tensor | None
    psi: float
    last: int
    ended: bool = False


def extend(x: torch.Tensor, r_n: torch.Tensor, r_b: torch.Tensor, last: torch.Tensor, empty: torch.Tensor,
           labels: torch.Tensor, blank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Extend N hypotheses by K labels each.

    ``x``: (N, T, C) CTC log-probabilities of each hypothesis's utterance (frames past its length padded with
    0 for blank and -inf otherwise, which leaves every score unchanged); ``r_n``, ``r_b``: (N, T);
    ``last``: (N,) last label (-1 if none); ``empty``: (N,) bool, hypothesis has no label yet;
    ``labels``: (N, K). Returns the extended ``r_n``, ``r_b`` (N, T, K) and ``psi`` (N, K).
    """
    n, t_max, _ = x.shape
    xs = torch.gather(x, 2, labels.unsqueeze(1).expand(n, t_max, labels.shape[1]))  # (N, T, K)
    x_blank = x[:, :, blank].unsqueeze(-1)  # (N, T, 1)
    r_sum = torch.logaddexp(r_n, r_b).unsqueeze(-1)  # (N, T, 1)
    phi = torch.where(labels.unsqueeze(1) == last.view(n, 1, 1), r_b.unsqueeze(-1), r_sum)  # (N, T, K)
    new_n = torch.full_like(xs, NEG_INF)
    new_b = torch.full_like(xs, NEG_INF)
    new_n[:, 0] = torch.where(empty.view(n, 1), xs[:, 0], torch.full_like(xs[:, 0], NEG_INF))
    psi = new_n[:, 0].clone()
    for t in range(1, t_max):
        new_n[:, t] = torch.logaddexp(new_n[:, t - 1], phi[:, t - 1]) + xs[:, t]
        new_b[:, t] = torch.logaddexp(new_n[:, t - 1], new_b[:, t - 1]) + x_blank[:, t]
        psi = torch.logaddexp(psi, phi[:, t - 1] + xs[:, t])
    return new_n, new_b, psi


class CTCPrefixScorer(LogitsProcessor):
    """Adds CTC prefix scores to the LLM's next-token scores (see the module docstring).

    ``log_probs``: (B, T, C) CTC log-probabilities, blank = class C - 1; ``lengths``: (B,) valid frames;
    ``num_beams``: hypotheses per utterance (rows of ``input_ids`` are utterance-major); ``end_ids``: tokens
    that end the hypothesis (EOS); ``stop_ids``: tokens that end the transcript but not the output.
    """

    def __init__(self, log_probs: torch.Tensor, lengths: torch.Tensor, weight: float, num_beams: int,
                 end_ids: set[int], stop_ids: set[int] = frozenset(), pre_beam: int = 10):
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
        self._cache: dict[tuple[int, tuple[int, ...]], _Prefix] = {}

    def _initial(self, b: int) -> _Prefix:
        return _Prefix(torch.full((self.x.shape[1],), NEG_INF), torch.cumsum(self.x[b, :, self.blank], 0), 0.0, -1)

    def _state(self, b: int, prefix: tuple[int, ...]) -> _Prefix:
        """The prefix's state: from the previous step's cache, else rebuilt token by token."""
        state = self._cache.get((b, prefix))
        if state is not None:
            return state
        parent = self._cache.get((b, prefix[:-1])) if prefix else None
        if parent is not None and parent.ended:  # past the transcript: nothing changes any more
            return parent
        state = self._initial(b)
        for i, token in enumerate(prefix):
            state = self._extend_one(b, state, token)
            self._cache[(b, prefix[: i + 1])] = state
        return state

    def _extend_one(self, b: int, state: _Prefix, token: int) -> _Prefix:
        if state.ended:
            return state
        if token in self.end_ids or token in self.stop_ids:
            return _Prefix(None, None, float(torch.logaddexp(state.r_n[-1], state.r_b[-1])), state.last, ended=True)
        scores = self._extend([b], [state], torch.tensor([[token]]))
        return scores[1][0][0]

    def _extend(self, rows: list[int], states: list[_Prefix], labels: torch.Tensor):
        """Scores (N, K) and new states [[_Prefix] * K] * N for extending ``states`` by ``labels``."""
        x = self.x[rows]
        in_vocab = labels < self.blank
        safe = torch.where(in_vocab, labels, torch.zeros_like(labels))
        r_n, r_b, psi = extend(
            x, torch.stack([s.r_n for s in states]), torch.stack([s.r_b for s in states]),
            torch.tensor([s.last for s in states]), torch.tensor([s.last < 0 for s in states]), safe, self.blank)
        full = torch.logaddexp(torch.stack([s.r_n[-1] for s in states]), torch.stack([s.r_b[-1] for s in states]))
        finishing = torch.tensor([[int(c) in self.end_ids or int(c) in self.stop_ids for c in row]
                                  for row in labels.tolist()], dtype=torch.bool).view(labels.shape)
        psi = torch.where(finishing, full.unsqueeze(1).expand_as(psi), psi)
        psi = torch.where(in_vocab | finishing, psi, torch.full_like(psi, NEG_INF))
        new_states = []
        for i, row in enumerate(labels.tolist()):
            new_states.append([
                _Prefix(None, None, float(psi[i, k]), states[i].last, ended=True) if finishing[i, k]
                else _Prefix(r_n[i, :, k], r_b[i, :, k], float(psi[i, k]), c)
                for k, c in enumerate(row)])
        return psi, new_states

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        log_probs = scores.float().log_softmax(dim=-1)  # greedy search passes raw logits, beam search log-probs
        out = (1.0 - self.weight) * log_probs
        prefixes = [tuple(row) for row in input_ids.tolist()]
        rows = [n // self.num_beams for n in range(len(prefixes))]
        states = [self._state(b, p) for b, p in zip(rows, prefixes)]
        active = [n for n, s in enumerate(states) if not s.ended]
        if active:
            k = min(self.pre_beam, scores.shape[-1])
            labels = log_probs[active].topk(k, dim=-1).indices  # (A, K)
            psi, new_states = self._extend([rows[n] for n in active], [states[n] for n in active], labels)
            old = torch.tensor([states[n].psi for n in active]).unsqueeze(1)
            delta = torch.where(torch.isfinite(old), psi - old, torch.full_like(psi, NEG_INF))
            joint = out[active].gather(1, labels) + self.weight * delta
            pruned = torch.full_like(out[active], NEG_INF).scatter(1, labels, joint)
            out[active] = pruned
        # the next call sees these prefixes extended by one token: keep what it can look up
        self._cache = {(rows[n], prefixes[n]): s for n, s in enumerate(states) if s.ended}
        for n, labels_n, states_n in zip(active, labels.tolist() if active else [], new_states if active else []):
            for c, s in zip(labels_n, states_n):
                self._cache[(rows[n], prefixes[n] + (c,))] = s
        return out.to(scores.dtype)
