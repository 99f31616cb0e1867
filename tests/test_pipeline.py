"""The decoding pipeline: per-token log-probabilities, the engine interface, one path for every caller."""

from __future__ import annotations

import pytest
import torch

from fixtures_path import AUDIO
from mooer.decoding import DecodingOptions
from mooer.features import audio_tokens
from mooer.inference.engines import Generation
from mooer.inference.pipeline import Prepared, longest_first
from mooer.prompting import collate_tokens, pad_features

CLIPS = ("demo", "zh1", "en1")


def teacher_forced_logprobs(model, features, task, ids):
    """log p(ids[i] | audio, prompt, ids[:i]) from one forward pass of the LLM (batch of one)."""
    net, pipe = model.network, model.pipeline
    feats, lengths = pad_features([features])
    audio_len = [audio_tokens(int(lengths[0]), pipe.downsample)]
    tokens = collate_tokens(audio_len, [pipe.prompts.prompt_ids(task)], pipe.prompts.pad_id)
    with torch.inference_mode():
        states = net.encoder(feats.to(net.dtype), lengths)
        prefix = net.embed(tokens, net.adapter(states))
        written = net.llm.get_input_embeddings()(torch.tensor([ids]))
        logits = net.llm(inputs_embeds=torch.cat([prefix, written], dim=1)).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    start = prefix.shape[1] - 1  # the position that predicts the first new token
    return [float(logp[start + i, t]) for i, t in enumerate(ids)]


@pytest.mark.parametrize("beams", [1, 4])
def test_logprobs_are_the_llms_own(tiny_model, beams):
    options = DecodingOptions(num_beams=beams, eos_bias=0.0, max_new_tokens=60)
    features = [tiny_model.featurize(str(AUDIO / f"{c}.wav"))[0] for c in CLIPS]
    generations = tiny_model.pipeline.generate(features, "asr", options)
    for feats, g in zip(features, generations):
        assert len(g.logprobs) == len(g.ids) > 0
        expected = teacher_forced_logprobs(tiny_model, feats, "asr", g.ids)
        assert g.logprobs == pytest.approx(expected, abs=2e-4)


def test_results_carry_logprobs_and_to_dict_hides_them(tiny_model):
    [r] = tiny_model.transcribe([str(AUDIO / "zh1.wav")], task="asr", decoding="greedy")
    assert len(r.token_logprobs) == len(r.token_ids) and all(p <= 0 for p in r.token_logprobs)
    assert "token_logprobs" not in r.to_dict() and "token_logprobs" in r.to_dict(with_tokens=True)


class FixedEngine:
    """A stand-in second engine: writes a fixed id sequence per row, and records what it was given."""

    name = "fixed"

    def __init__(self, ids):
        self.ids = ids
        self.calls = []

    def check(self, options):
        if options.num_beams > 1:
            from mooer.errors import ConfigError

            raise ConfigError("fixed engine: greedy only; use engine 'hf'")

    def generate(self, embeds, attention_mask, options, *, max_new_tokens=None, processors=(), streamer=None):
        self.calls.append((tuple(embeds.shape), len(processors)))
        return [Generation(list(self.ids), [-0.5] * len(self.ids)) for _ in range(embeds.shape[0])]


def test_a_second_engine_plugs_in_without_touching_callers(tiny_model):
    ids = tiny_model.tokenizer.encode("hello") + [tiny_model.network.eos_id]
    engine = FixedEngine(ids)
    original = tiny_model.pipeline.engine
    tiny_model.pipeline.engine = engine
    try:
        results = tiny_model.transcribe([str(AUDIO / f"{c}.wav") for c in CLIPS], task="asr", decoding="greedy",
                                        batch_size=2)
        assert [r.text for r in results] == ["hello"] * 3
        assert [len(r.token_logprobs) for r in results] == [len(ids)] * 3
        assert [shape[0] for shape, _ in engine.calls] == [2, 1]  # length-sorted batches of <= 2
        with pytest.raises(Exception, match="greedy only"):
            tiny_model.transcribe([str(AUDIO / "zh1.wav")], task="asr", decoding="official")
    finally:
        tiny_model.pipeline.engine = original


def test_decode_returns_input_order_from_length_sorted_batches(tiny_model):
    items = [Prepared(c, c, tiny_model.featurize(str(AUDIO / f"{c}.wav"))[0], 1.0, index=i)
             for i, c in enumerate(("en1", "demo", "zh1"))]
    seen = []
    results = tiny_model.pipeline.decode(items, "asr", DecodingOptions(num_beams=1, max_new_tokens=5), 2,
                                         on_batch=lambda batch, done: seen.append([p.key for p in batch]))
    assert [r.key for r in results] == ["en1", "demo", "zh1"]
    assert seen == [["demo", "en1"], ["zh1"]]  # T6: demo 110, en1 52, zh1 51 → longest first


def test_longest_first():
    assert list(longest_first([3, 9, 1, 7], 3, int)) == [[9, 7, 3], [1]]
    with pytest.raises(ValueError):
        list(longest_first([1], 0, int))
