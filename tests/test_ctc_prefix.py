"""Joint CTC/attention decoding: the prefix scorer against brute-force enumeration of CTC paths."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mooer.decoding import DecodingOptions
from mooer.inference.ctc_prefix import CTCPrefixScorer

BLANK = 3  # classes 0, 1, 2 and blank
EOS = 7  # an LLM token outside the CTC classes
STOP = 6


def collapse(path) -> tuple:
    out, prev = [], None
    for p in path:
        if p != prev and p != BLANK:
            out.append(p)
        prev = p
    return tuple(out)


def enumerate_paths(x: torch.Tensor) -> tuple[dict, dict]:
    """All C**T paths of (T, C) log-probs: probability of each label sequence and of each prefix."""
    exact, prefix = {}, {}
    for path in itertools.product(range(x.shape[1]), repeat=x.shape[0]):
        p = math.exp(sum(float(x[t, c]) for t, c in enumerate(path)))
        y = collapse(path)
        exact[y] = exact.get(y, 0.0) + p
        for i in range(1, len(y) + 1):
            prefix[y[:i]] = prefix.get(y[:i], 0.0) + p
    return exact, prefix


def call(scorer: CTCPrefixScorer, prefixes: list[tuple], vocab: int = 8) -> torch.Tensor:
    """One decoding step with uniform LLM scores: returns the processed scores (rows = prefixes)."""
    ids = torch.tensor(prefixes, dtype=torch.long).view(len(prefixes), -1)
    return scorer(ids, torch.zeros(len(prefixes), vocab))


def test_prefix_and_sequence_probabilities_match_enumeration_with_padding():
    torch.manual_seed(0)
    lengths = [5, 4]
    x = torch.randn(2, 5, 4).log_softmax(-1)
    scorer = CTCPrefixScorer(x, torch.tensor(lengths), weight=1.0, num_beams=1, end_ids={EOS}, pre_beam=8)
    for b, n in enumerate(lengths):
        exact, prefix = enumerate_paths(x[b, :n])  # the padded frames of row 1 must not count
        for g in [(), (0,), (2,), (0, 0), (1, 2), (2, 1, 2), (1, 1, 1), (0, 1, 2, 0)]:
            psi = float(scorer._rebuild(b, g).psi[0])
            assert math.exp(psi) == pytest.approx(prefix.get(g, 1.0 if not g else 0.0), rel=1e-5, abs=1e-9)
            end = scorer._rebuild(b, g + (EOS,))
            assert bool(end.ended[0]) and math.exp(float(end.psi[0])) == pytest.approx(exact.get(g, 0.0), rel=1e-5,
                                                                                      abs=1e-9)


def test_step_scores_are_prefix_score_differences_and_other_tokens_are_pruned():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 4).log_softmax(-1)
    exact, prefix = enumerate_paths(x[0])
    scorer = CTCPrefixScorer(x, torch.tensor([4]), weight=0.5, num_beams=1, end_ids={EOS}, pre_beam=8)
    call(scorer, [()])
    out = call(scorer, [(1,)])[0]  # from the cache of the first step
    uniform = math.log(1 / 8)
    for c in (0, 1, 2):
        want = 0.5 * uniform + 0.5 * math.log(prefix[(1, c)] / prefix[(1,)])
        assert float(out[c]) == pytest.approx(want, rel=1e-5)
    assert float(out[EOS]) == pytest.approx(0.5 * uniform + 0.5 * math.log(exact[(1,)] / prefix[(1,)]), rel=1e-5)
    # the blank index (3) and an LLM token without a CTC class (5) can never be chosen
    assert out[BLANK] == float("-inf") and out[5] == float("-inf")


def test_greedy_joint_decoding_follows_a_confident_ctc_head():
    """Uniform LLM, peaked CTC over 'a a _ b _ b b _': greedy picks 0, 1, 1, then EOS."""
    frames = [0, 0, BLANK, 1, BLANK, 1, 1, BLANK]
    x = torch.full((1, len(frames), 4), math.log(0.01))
    for t, c in enumerate(frames):
        x[0, t, c] = math.log(0.97)
    scorer = CTCPrefixScorer(x, torch.tensor([len(frames)]), weight=0.3, num_beams=1, end_ids={EOS}, pre_beam=8)
    prefix: tuple = ()
    for _ in range(6):
        token = int(call(scorer, [prefix])[0].argmax())
        if token == EOS:
            break
        prefix += (token,)
    assert prefix == (0, 1, 1) and token == EOS


def test_stop_token_ends_the_scored_transcript():
    torch.manual_seed(2)
    x = torch.randn(2, 5, 4).log_softmax(-1)
    scorer = CTCPrefixScorer(x, torch.tensor([5, 5]), weight=0.4, num_beams=2, end_ids={EOS}, stop_ids={STOP},
                             pre_beam=8)
    call(scorer, [(), ()])
    call(scorer, [(2,), (1,)])
    out = call(scorer, [(2, STOP), (1, 0)])  # row 0 is past the transcript: only the LLM scores it
    torch.testing.assert_close(out[0], torch.full((8,), 0.6 * math.log(1 / 8)))
    assert (out[1] == float("-inf")).sum() == 3  # blank + the two LLM-only tokens (4, 5)


def test_weights_are_validated():
    x = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match="CTC weight"):
        CTCPrefixScorer(x, torch.tensor([2]), weight=0.0, num_beams=1, end_ids={EOS})
    with pytest.raises(ValueError, match="ctc_weight"):
        DecodingOptions(ctc_weight=1.5)
    assert DecodingOptions().ctc_weight is None  # the model decides (0 for the official checkpoints)
