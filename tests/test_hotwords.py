"""Hotwords: the context graph, the logits processor, decoding with it, the phrase lists and their scores."""

from __future__ import annotations

import math
import random

import pytest
import torch

from fixtures_path import AUDIO
from mooer.decoding import (
    DEFAULT_FILTERED_HOTWORD_WEIGHT,
    DEFAULT_HOTWORD_THRESHOLD,
    DEFAULT_HOTWORD_WEIGHT,
    DecodingOptions,
    get_preset,
)
from mooer.evaluation import evaluate, phrase_in
from mooer.inference.ctc_prefix import CTCPrefixScorer
from mooer.inference.hotwords import (
    MAX_HOTWORD_CHARS,
    MAX_HOTWORDS,
    ContextGraph,
    FilteredHotwordBooster,
    HotwordBooster,
    HotwordError,
    HotwordList,
    build_graph,
    ctc_keyword_scores,
    normalize_hotwords,
    parse_hotwords,
    read_hotwords_file,
    spellings,
)


def steps(graph: ContextGraph, tokens) -> list[float]:
    """The bonus of each step of writing ``tokens`` from the start."""
    state, previous, out = 0, None, []
    for t in tokens:
        out.append(graph.bonus(state, t, previous))
        state, previous = graph.next_state(state, t, previous), t
    return out


# ----------------------------------------------------------------------------------------- the graph
def test_each_matching_token_earns_and_a_break_takes_it_back():
    g = ContextGraph([([1, 2, 3], 1.5)])
    assert steps(g, [1, 2, 3]) == [1.5, 1.5, 1.5]
    assert steps(g, [1, 2, 9]) == [1.5, 1.5, -3.0]  # the unfinished phrase is taken back
    assert g.walk([1, 2, 9])[1] == 0.0
    assert g.walk([7, 1, 2, 3, 7])[1] == 4.5  # a completed phrase keeps its bonus
    state, _ = g.walk([1, 2])
    assert g.pending(state) == 3.0 and g.bonus(state, 99) == -3.0  # EOS (any other token) takes it back too


def test_failure_links_keep_the_suffix_that_still_matches():
    g = ContextGraph([([1, 2, 3], 1.0), ([2, 4], 1.0)])
    # 1 2 4: "1 2" breaks but its suffix "2" starts "2 4", which completes
    assert steps(g, [1, 2, 4]) == [1.0, 1.0, 0.0]
    state, total = g.walk([1, 2, 4])
    assert g.is_end(state) and total == 2.0
    # 1 2 2 4: the second 2 restarts "2 4" from the root
    assert steps(g, [1, 2, 2, 4]) == [1.0, 1.0, -1.0, 1.0]


def test_a_phrase_that_is_a_prefix_of_another_keeps_its_bonus():
    g = ContextGraph([([1, 2], 1.0), ([1, 2, 3, 4], 1.0)])
    assert g.walk([1, 2, 3, 4])[1] == 4.0
    assert g.walk([1, 2, 3, 9])[1] == 2.0  # "1 2" was completed; only "3" is taken back
    assert g.walk([1, 2, 9])[1] == 2.0


def test_a_phrase_completed_inside_a_longer_match_is_banked():
    g = ContextGraph([([5, 1, 2, 9], 1.0), ([1, 2], 1.0)])
    assert g.walk([5, 1, 2, 7])[1] == 2.0  # the long one broke, "1 2" stays
    assert g.walk([5, 1, 2, 9])[1] == 6.0  # both phrases written


def test_a_shared_token_earns_the_largest_weight_and_a_phrase_its_own_total():
    g = ContextGraph([([1, 2], 1.0), ([1, 3], 4.0)])
    assert steps(g, [1, 2]) == [4.0, -2.0]  # 4 for the shared first token; "1 2" then comes to its own 2
    assert g.walk([1, 3])[1] == 8.0
    assert ContextGraph([([1, 2], 1.0, 5.0)]).walk([1, 2])[1] == 5.0  # an explicit total


def test_word_boundaries():
    # tokens: 10 "go" (word characters at both ends), 11 "al" (ends with one), 12 " " (neither),
    # 20 " expression" (ends with one), 21 "s" (starts with one), 22 "." (neither)
    word_start, word_end = frozenset({10, 21}), frozenset({10, 11, 20, 21})
    g = ContextGraph([([10], 2.0), ([20], 2.0)], word_start, word_end)
    assert g.walk([11, 10])[1] == 0.0  # "go" inside "algo" is not a match
    assert g.walk([12, 10])[1] == 2.0 and g.walk([10])[1] == 2.0  # after a space or at the start it is
    assert steps(g, [20, 21]) == [2.0, -2.0]  # " expression" + "s": the word goes on, the bonus goes back
    assert g.walk([20, 22])[1] == 2.0 and g.walk([20])[1] == 2.0
    # the same sets without boundaries: all of them match
    plain = ContextGraph([([10], 2.0), ([20], 2.0)])
    assert plain.walk([11, 10])[1] == 2.0 and plain.walk([20, 21])[1] == 2.0


def test_failure_links_do_not_start_a_phrase_inside_a_word():
    # phrase A = 30 32 34, phrase B = 32 33; 30 ends with a word character and 32 starts with one, so the
    # "32" inside A's "30 32" is mid-word: A breaking at 33 must not fall back into B
    g = ContextGraph([([30, 32, 34], 1.0), ([32, 33], 1.0)], frozenset({32}), frozenset({30}))
    assert g.walk([30, 32, 33])[1] == 0.0
    assert ContextGraph([([30, 32, 34], 1.0), ([32, 33], 1.0)]).walk([30, 32, 33])[1] == 2.0


def test_spellings():
    assert spellings("张伟") == ["张伟", " 张伟"]
    forms = spellings("new york")
    for form in ("new york", "NEW YORK", "New york", "New York", " new york", " NEW YORK", " New York"):
        assert form in forms
    assert len(forms) == len(set(forms))
    assert spellings("iPhone")[:4] == ["iPhone", "iphone", "IPHONE", "IPhone"]


def test_every_spelling_earns_the_same(tiny_model):
    tok = tiny_model.tokenizer
    graph = build_graph(tok, ("Kowalski",), 2.0)
    totals = {form: graph.walk(tok(form, add_special_tokens=False)["input_ids"])[1] for form in spellings("Kowalski")}
    shortest = min(len(tok(f, add_special_tokens=False)["input_ids"]) for f in spellings("Kowalski"))
    assert len({len(tok(f, add_special_tokens=False)["input_ids"]) for f in totals}) > 1  # the test means something
    for form, total in totals.items():
        assert total == pytest.approx(2.0 * shortest), form


def test_spellings_share_their_total_by_characters(tiny_model):
    tok, texts = tiny_model.tokenizer, tiny_model.pipeline.token_texts
    graph = build_graph(tok, ("Kowalski",), 2.0, texts)
    for form in spellings("Kowalski"):
        ids = tok(form, add_special_tokens=False)["input_ids"]
        chars = [len(texts[i].replace(" ", "")) for i in ids]
        bonuses = steps(graph, ids)
        assert sum(bonuses) == pytest.approx(graph.walk(ids)[1])
        # while the match is open a token earns at least its share (the largest of the spellings through it)
        total = sum(bonuses)
        for k, b in zip(chars[:-1], bonuses[:-1]):
            assert b >= total * k / sum(chars) - 1e-6
    upper = tok("KOWALSKI", add_special_tokens=False)["input_ids"]
    assert len(upper) > 2 and steps(graph, upper)[0] < 2.0  # one letter of eight earns little


# ------------------------------------------------------------------------------------------ processor
def random_graph(rng: random.Random, vocab: int) -> ContextGraph:
    sequences = [([rng.randrange(vocab) for _ in range(rng.randint(1, 4))], rng.choice([1.0, 2.5]))
                 for _ in range(25)]
    word_start = frozenset(t for t in range(vocab) if rng.random() < 0.5)
    word_end = frozenset(t for t in range(vocab) if rng.random() < 0.5)
    return ContextGraph(sequences, word_start, word_end)


def test_the_processor_adds_the_graphs_bonus_to_every_token_of_every_row():
    """The vectorised booster equals the graph's own bonus for every (row, token), over a beam search whose
    rows are reordered, forked and new at every step."""
    rng = random.Random(0)
    vocab = 12
    for _ in range(5):
        graph = random_graph(rng, vocab)
        booster = HotwordBooster(graph)
        rows = [[]]
        for _ in range(6):
            scores = torch.randn(len(rows), vocab)
            out = booster(torch.tensor(rows, dtype=torch.long).reshape(len(rows), -1), scores)
            for r, prefix in enumerate(rows):
                state, _ = graph.walk(prefix)
                previous = prefix[-1] if prefix else None
                expected = torch.tensor([graph.bonus(state, t, previous) for t in range(vocab)])
                assert torch.allclose(out[r] - scores[r], expected, atol=1e-5), (prefix, out[r] - scores[r], expected)
            # the next step's rows: extensions of some of these (as beam search picks them), in a new order
            rows = [rows[rng.randrange(len(rows))] + [rng.randrange(vocab)] for _ in range(rng.randint(1, 6))]
        assert not torch.equal(out, scores)


def test_the_processor_keeps_minus_inf_and_the_input():
    graph = ContextGraph([([1, 2], 3.0)])
    scores = torch.tensor([[0.0, -float("inf"), -1.0]])
    kept = scores.clone()
    out = HotwordBooster(graph)(torch.zeros(1, 0, dtype=torch.long), scores)
    assert out[0, 1] == -float("inf") and torch.equal(scores, kept)


# ------------------------------------------------------------------------------------------ the pre-filter
CHARS = "abcxyz "  # CharTokenizer's vocabulary; the CTC blank is class len(CHARS)


class CharTokenizer:
    """One token per character (case folded): enough to build a HotwordList."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[CHARS.index(c) for c in t.lower()] for t in texts]}


def posteriors(*frames: str, length: int | None = None) -> torch.Tensor:
    """(B, T, C) CTC log-probabilities: per utterance a string of classes, one per frame ('_' = blank), each
    frame 0.9 on its class; shorter strings are padded with blank frames."""
    length = length or max(len(f) for f in frames)
    out = torch.full((len(frames), length, len(CHARS) + 1), 0.1 / len(CHARS))
    for b, f in enumerate(frames):
        for t, c in enumerate(f.ljust(length, "_")):
            out[b, t, len(CHARS) if c == "_" else CHARS.index(c)] = 0.9
    return out.log()


def ids(text: str) -> list[int]:
    return [CHARS.index(c) for c in text]


def test_keyword_score_of_a_spoken_phrase_is_zero_and_of_an_unspoken_one_far_below():
    lp = posteriors("__aa_b__c_")
    spoken, near, unspoken, reversed_, repeat = ctc_keyword_scores(
        lp, None, [ids("ab"), ids("ac"), ids("xy"), ids("ba"), ids("aa")])[0].tolist()
    assert spoken == pytest.approx(0.0)  # the best path writes it (a repeated frame, a blank between)
    gap = math.log(0.9 / (0.1 / len(CHARS)))  # one frame on a class that is not the frame's best
    assert near == pytest.approx(-gap / 2)  # "ac": only the b frame is off (c comes later: no window has both)
    assert unspoken == pytest.approx(-gap)  # each of its tokens costs a frame
    assert reversed_ == pytest.approx(-gap / 2)  # "ba": a is never after b; one off frame is the best
    assert repeat == pytest.approx(-gap / 2)  # "aa" needs a blank between its two a's: "aa" frames collapse to one


def test_keyword_score_respects_lengths_and_the_threshold_bound():
    lp = posteriors("ab__", "__ab")
    full = ctc_keyword_scores(lp, None, [ids("ab")])
    assert full[:, 0].tolist() == pytest.approx([0.0, 0.0])
    cut = ctc_keyword_scores(lp, torch.tensor([4, 2]), [ids("ab")])  # the second says "ab" after its end
    assert cut[0, 0] == pytest.approx(0.0) and cut[1, 0] < -1.0
    # with a threshold, pairs that cannot reach it are not searched (-inf); the others score as without one
    pruned = ctc_keyword_scores(lp, torch.tensor([4, 2]), [ids("ab"), ids("xy")], threshold=-1.0)
    assert pruned[0, 0] == pytest.approx(0.0) and pruned[1, 0] == float("-inf")
    assert pruned[:, 1].tolist() == [float("-inf")] * 2


def test_the_pre_filter_keeps_per_utterance_the_phrases_it_heard():
    listed = HotwordList(CharTokenizer(), ("ab", "xy", ("zc", 2.0)), 1.5)
    lp = posteriors("_ab__", "_cy__", "_xy_zc")
    assert listed.kept(lp, None, -1.0) == [frozenset({0}), frozenset(), frozenset({1, 2})]
    booster = listed.booster(lp, None, -1.0)
    assert isinstance(booster, FilteredHotwordBooster) and booster.boosters[1] is None
    # two beams per utterance; after "a" in utterance 0 only "b" (completing "ab") earns, after "c" or "x" in
    # utterance 1 nothing does (it heard no listed phrase), and utterance 2 boosts its own two
    generated = torch.tensor([[ids("a")[0]], [ids("c")[0]], [ids("x")[0]], [ids("x")[0]], [ids("x")[0]],
                              [ids("z")[0]]])
    scores = torch.zeros(6, len(CHARS))
    out = booster(generated, scores)
    assert torch.equal(out[2:4], scores[2:4])
    assert out[0, ids("b")[0]] > 0  # "ab" goes on; "x" would start "xy" if that were kept: it is not
    assert out[0, ids("x")[0]] == out[0, ids("y")[0]] == out[0, ids("c")[0]] < 0
    assert out[4, ids("y")[0]] > 0 and out[5, ids("c")[0]] > 0
    for r in (0, 1, 4, 5):  # each row as the phrase's own graph scores it
        graph = listed.subgraph(frozenset({0}) if r < 2 else frozenset({1, 2}))
        expected = HotwordBooster(graph)(generated[r : r + 1], scores[r : r + 1])
        assert torch.equal(out[r], expected[0])
    # without posteriors or threshold: the plain booster over the whole list
    assert isinstance(listed.booster(), HotwordBooster) and isinstance(listed.booster(lp, None, None), HotwordBooster)


def test_hotword_threshold_option():
    assert DecodingOptions().hotword_threshold == DEFAULT_HOTWORD_THRESHOLD <= 0
    assert DecodingOptions(hotword_threshold=-2).hotword_threshold == -2.0
    assert DecodingOptions(hotword_threshold=float("-inf")).hotword_threshold == float("-inf")
    for bad in (0.5, float("nan"), "x", True):
        with pytest.raises(ValueError, match="hotword_threshold"):
            DecodingOptions(hotword_threshold=bad)


# ------------------------------------------------------------------------------------------ decoding
def processors_of(model, options, task="asr", audio=str(AUDIO / "zh1.wav")):
    """The logits processors ``Pipeline.generate`` hands the engine for ``options`` decoding ``audio``."""
    seen = []
    engine = model.pipeline.engine
    original = engine.generate

    def spy(*args, processors=(), **kwargs):
        seen.append(list(processors))
        return original(*args, processors=processors, **kwargs)

    engine.generate = spy
    try:
        model.transcribe([audio], task=task, decoding=options)
    finally:
        del engine.generate
    return seen[0]


def test_no_hotwords_add_no_processor_and_change_nothing(tiny_model):
    plain = DecodingOptions(num_beams=2, max_new_tokens=20)
    assert processors_of(tiny_model, plain) == []
    other_weight = plain.replace(hotword_weight=7.0)  # a weight without phrases is nothing either
    assert processors_of(tiny_model, other_weight) == []
    a = tiny_model.transcribe([str(AUDIO / "zh1.wav")], task="asr", decoding=plain)[0]
    b = tiny_model.transcribe([str(AUDIO / "zh1.wav")], task="asr", decoding=other_weight)[0]
    assert a.token_ids == b.token_ids
    [booster] = processors_of(tiny_model, plain.replace(hotwords=("的",)))
    assert isinstance(booster, HotwordBooster)


def boosted_phrase(model, clip, options):
    """A two-token phrase the model does not write for ``clip`` (so boosting it must show)."""
    base = model.transcribe([str(AUDIO / f"{clip}.wav")], task="asr", decoding=options)[0]
    texts = model.pipeline.token_texts
    words = [i for i, t in enumerate(texts) if len(t.strip()) == 1 and "\u4e00" <= t.strip() <= "\u9fff"]
    for a in words:
        for b in words:
            phrase = texts[a].strip() + texts[b].strip()
            if phrase not in base.text and len(model.tokenizer(phrase, add_special_tokens=False)["input_ids"]) == 2:
                return base, phrase
    raise AssertionError("no phrase found")


@pytest.mark.parametrize("preset", ["official", "greedy"])
def test_boosting_writes_the_phrase_with_beam_search_and_greedy(tiny_model, preset):
    options = get_preset(preset).replace(max_new_tokens=30)
    base, phrase = boosted_phrase(tiny_model, "zh1", options)
    boosted = tiny_model.transcribe([str(AUDIO / "zh1.wav")], task="asr",
                                    decoding=options.replace(hotwords=(phrase,), hotword_weight=20.0))[0]
    assert phrase in boosted.text and phrase not in base.text
    # the recorded log-probabilities stay the LLM's own (before the bonus)
    assert all(p <= 0 for p in boosted.token_logprobs)
    # MooER.transcribe's shorthand is the same decoding
    short = tiny_model.transcribe([str(AUDIO / "zh1.wav")], task="asr", decoding=options, hotwords=[phrase],
                                  hotword_weight=20.0)[0]
    assert short.token_ids == boosted.token_ids


@pytest.fixture(scope="module")
def demo_model():
    from mooer.api import MooER

    return MooER.from_pretrained(None, device="cpu", dtype="float32")


@pytest.mark.parametrize("preset", ["official", "greedy"])
def test_joint_ctc_decoding_and_boosting_compose(demo_model, preset):
    """The demo model has a CTC head: joint decoding stays on, the booster comes after the CTC scorer, and the
    output moves to the listed homophone (索引 suo3 yin3 → 所引 suo3 yin3)."""
    from importlib.resources import files

    wav = str(files("mooer.assets") / "sample_zh.wav")
    options = get_preset(preset)
    assert demo_model.ctc_weight(options) > 0
    base = demo_model.transcribe([wav], decoding=options)[0]
    boosted_options = options.replace(hotwords=("所引",), hotword_weight=6.0)
    kinds = [type(p) for p in processors_of(demo_model, boosted_options)]
    assert kinds == [CTCPrefixScorer, FilteredHotwordBooster]  # the CTC pre-filter is on by default
    boosted = demo_model.transcribe([wav], decoding=boosted_options)[0]
    assert base.text.startswith("索引") and boosted.text.startswith("所引")
    assert boosted.text[2:] == base.text[2:]  # the rest of the sentence is untouched


def test_the_pre_filter_keeps_the_spoken_homophone_and_drops_the_unspoken_phrase(demo_model):
    """sample_zh.wav says 索引 (suo3 yin3): its CTC posteriors support the homophone 所引, not 阿姆斯特丹 or
    Kubernetes; with the pre-filter off every phrase is boosted."""
    from importlib.resources import files

    wav = str(files("mooer.assets") / "sample_zh.wav")
    options = get_preset("official").replace(hotwords=("阿姆斯特丹", "所引", "Kubernetes"))
    [_, booster] = processors_of(demo_model, options, audio=wav)
    assert isinstance(booster, FilteredHotwordBooster)
    [kept] = booster.boosters
    tok = demo_model.tokenizer
    suoyin = tok("所引", add_special_tokens=False)["input_ids"]
    assert len(suoyin) == 2
    # the default weight where the pre-filter runs
    assert kept.graph.walk(suoyin)[1] == pytest.approx(2 * DEFAULT_FILTERED_HOTWORD_WEIGHT)
    for unspoken in ("阿姆斯特丹", " Kubernetes"):
        assert kept.graph.walk(tok(unspoken, add_special_tokens=False)["input_ids"])[1] == 0.0
    [_, plain] = processors_of(demo_model, options.replace(hotword_threshold=float("-inf")), audio=wav)
    assert type(plain) is HotwordBooster
    assert plain.graph.walk(tok("阿姆斯特丹", add_special_tokens=False)["input_ids"])[1] > 0
    assert plain.graph.walk(suoyin)[1] == pytest.approx(2 * DEFAULT_HOTWORD_WEIGHT)  # and the plain default
    assert demo_model.transcribe([wav], decoding=options)[0].text.startswith("所引")


# ------------------------------------------------------------------------------------------- lists
def test_parsing_and_normalising():
    assert parse_hotwords("张伟, Kubernetes\n高德地图，索引、 a  b ") == ("张伟", "Kubernetes", "高德地图", "索引", "a b")
    assert parse_hotwords("  ") == () and parse_hotwords(None) == ()
    assert parse_hotwords("x\t2.5, y") == (("x", 2.5), "y")
    assert normalize_hotwords(["a", "a", ("a", 2.0), ("b", 3)]) == ("a", ("b", 3.0))  # a repeat keeps the first
    options = DecodingOptions(hotwords=["张伟", ("Kubernetes", 2)])
    assert options.hotwords == ("张伟", ("Kubernetes", 2.0))
    assert options == DecodingOptions(hotwords=("张伟", ("Kubernetes", 2.0)))
    assert hash(options) == hash(DecodingOptions(hotwords="张伟, Kubernetes\t2"))
    assert DecodingOptions().hotwords == ()
    assert DecodingOptions().hotword_weight is None  # chosen per model and task: the pre-filter's or the plain default


@pytest.mark.parametrize("bad, message", [
    ("a,,b", "entry 2 is an empty phrase"),
    ("a,", "entry 2 is an empty phrase"),
    ("x" * (MAX_HOTWORD_CHARS + 1), f"at most {MAX_HOTWORD_CHARS}"),
    (",".join(f"p{i}" for i in range(MAX_HOTWORDS + 1)), f"more than {MAX_HOTWORDS} phrases"),
    ("a\theavy", "the weight of 'a' must be a number, got 'heavy'"),
    ("a\t0", "must be > 0"),
    ("a\tnan", "must be > 0"),
    ("a\t21", "<= 20"),
])
def test_bad_lists_name_their_cause(bad, message):
    with pytest.raises(HotwordError, match=message.replace("(", r"\(").replace("'", "'")):
        parse_hotwords(bad)
    with pytest.raises(ValueError):
        DecodingOptions(hotwords=bad)


def test_bad_weights_and_entries():
    for weight in (0, -1, "x", float("inf"), True):
        with pytest.raises(ValueError, match="hotword_weight"):
            DecodingOptions(hotword_weight=weight)
    with pytest.raises(HotwordError, match="must be a string"):
        normalize_hotwords([3])
    with pytest.raises(HotwordError, match="pair"):
        normalize_hotwords([("a", 1, 2)])
    assert len(normalize_hotwords([f"p{i}" for i in range(MAX_HOTWORDS)])) == MAX_HOTWORDS


def test_hotwords_file(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text("\ufeff张伟\n\nKubernetes\t4\n  New   York \n", encoding="utf-8")
    assert read_hotwords_file(path) == ("张伟", ("Kubernetes", 4.0), "New York")
    path.write_text("a\nb\tlots\n", encoding="utf-8")
    with pytest.raises(HotwordError, match=r"terms.txt:2: the weight of 'b'"):
        read_hotwords_file(path)


# ------------------------------------------------------------------------------------------- scores
def test_phrase_matching_for_scores():
    assert phrase_in("Knuth", "donald knuth wrote") and phrase_in("Knuth", "(Knuth)")
    assert not phrase_in("Knuth", "knuths") and not phrase_in("go", "algo rithm")
    assert phrase_in("高德地图", "打开高德地图吧")
    assert not phrase_in("Knuth", "knuth", case_sensitive=True)
    assert phrase_in("New  York", "in new\u3000york")  # NFKC, one space


def test_hotword_scores():
    refs = {"u1": "打开高德地图", "u2": "call Knuth now", "u3": "nothing here", "u4": "the Grafana server"}
    base = {"u1": "打开高的地图", "u2": "call Knuth now", "u3": "nothing here", "u4": "the graph fauna server"}
    hyps = {"u1": "打开高德地图", "u2": "call canute now", "u3": "nothing here Grafana", "u4": "the grafana server"}
    phrases = ["高德地图", "Knuth", "Grafana", "张伟"]
    report = evaluate(refs, hyps, metric="cer", hotwords=phrases, baseline=base)
    h = report.hotwords
    assert (h.spoken, h.hits, h.unspoken, h.false_alarms, h.utterances_with_false_alarms) == (3, 2, 13, 1, 1)
    assert h.recall == pytest.approx(200 / 3) and h.false_alarm_rate == pytest.approx(100 / 13)
    assert (h.baseline_missed, h.recovered) == (2, 2) and h.recovered_recall == 100.0
    assert h.utterances["u2"] == {"spoken": ["Knuth"], "missed": ["Knuth"], "false_alarms": []}
    assert h.utterances["u3"]["false_alarms"] == ["Grafana"]
    text = report.to_text()
    assert "Hotwords -> recall 66.67 % (2/3" in text and "baseline missed -> recall 100.00 % (2/2)" in text
    assert report.to_dict()["hotwords"]["false_alarms"] == 1
    assert "hotwords" not in evaluate(refs, hyps, metric="cer").to_dict()


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_hotwords_reach_the_decoder(tiny_model, capsys):
    from fixtures_path import OFFICIAL_TINY
    from mooer.cli import main

    options = get_preset("greedy").replace(max_new_tokens=30)
    base, phrase = boosted_phrase(tiny_model, "zh1", options)
    boosted = tiny_model.transcribe([str(AUDIO / "zh1.wav")], task="asr",
                                    decoding=options.replace(hotwords=(phrase, "别的词"), hotword_weight=20.0))[0]
    assert main(["transcribe", str(AUDIO / "zh1.wav"), "--model", str(OFFICIAL_TINY), "--task", "asr",
                 "--preset", "greedy", "--max-new-tokens", "30", "--hotwords", f"{phrase}, 别的词",
                 "--hotword-weight", "20"]) == 0
    out = capsys.readouterr().out
    assert out == boosted.text + "\n" and phrase in out


@pytest.mark.parametrize("args, message", [
    (["--hotwords", "a,,b"], "--hotwords entry 2 is an empty phrase"),
    (["--hotwords", "x" * 65], "at most 64"),
    (["--hotword-weight", "0", "--hotwords", "a"], "hotword_weight must be > 0"),
    (["--hotwords-file", "/nonexistent/terms.txt"], "No such file"),
])
def test_cli_bad_hotwords_are_usage_errors(args, message, capsys):
    from fixtures_path import OFFICIAL_TINY
    from mooer.cli import main

    assert main(["transcribe", str(AUDIO / "zh1.wav"), "--model", str(OFFICIAL_TINY), *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_hotwords_file_limits_and_weight_type(tmp_path, capsys):
    from fixtures_path import OFFICIAL_TINY
    from mooer.cli import main

    many = tmp_path / "many.txt"
    many.write_text("".join(f"term{i}\n" for i in range(MAX_HOTWORDS + 1)), encoding="utf-8")
    assert main(["transcribe", str(AUDIO / "zh1.wav"), "--model", str(OFFICIAL_TINY), "--hotwords-file",
                 str(many)]) == 2
    assert f"more than {MAX_HOTWORDS} phrases" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["transcribe", str(AUDIO / "zh1.wav"), "--hotword-weight", "heavy"])
    assert info.value.code == 2 and "invalid float value: 'heavy'" in capsys.readouterr().err


def test_eval_reports_hotword_scores(tmp_path, capsys):
    import json

    from mooer.cli import main

    (tmp_path / "ref").write_text("u1 打开高德地图\nu2 call Knuth now\n", encoding="utf-8")
    (tmp_path / "base").write_text("u1 打开高的地图\nu2 call canute now\n", encoding="utf-8")
    (tmp_path / "hyp").write_text("u1 打开高德地图\nu2 call canute Grafana\n", encoding="utf-8")
    (tmp_path / "terms.txt").write_text("高德地图\nKnuth\t3\nGrafana\n", encoding="utf-8")
    args = ["eval", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"), "--hotwords",
            str(tmp_path / "terms.txt")]
    assert main(args + ["--hotword-baseline", str(tmp_path / "base")]) == 0
    out = capsys.readouterr().out
    assert "Hotwords -> recall 50.00 % (1/2 spoken listed phrases written); false alarms 25.000 % (1/4" in out
    assert "Hotwords the baseline missed -> recall 50.00 % (1/2)" in out
    assert main(args + ["--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["hotwords"]["recall"] == 50.0 and report["hotwords"]["details"]["u2"]["false_alarms"] == ["Grafana"]
    assert main(["eval", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"), "--hotword-baseline",
                 str(tmp_path / "base")]) == 1
    assert "--hotword-baseline needs --hotwords" in capsys.readouterr().err
