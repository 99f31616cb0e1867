"""Speed options: every exact option keeps the official-preset fixture ids; int8 runs; padding is reported.

Speed itself is never asserted here (``benchmarks/bench_speed.py`` measures it).
"""

from __future__ import annotations

import pytest
import torch

from fixtures_path import AUDIO, OFFICIAL_TINY
from mooer.inference.speed import compile_model, quantize_llm
from mooer.inference.stats import PaddingStats, batched_padding_fraction

BATCH = ("demo", "zh1", "zh2", "en1")  # the reference batch of the fixtures (T6 = 110, 51, 76, 52)
PATHS = [str(AUDIO / f"{c}.wav") for c in BATCH]
# (preset, task, reference run): beam on asr (longest run 125 tokens), greedy on ast (longest 98 tokens)
RUNS = [("official", "asr", "beam"), ("greedy", "ast", "greedy")]


def reference_ids(ref_json, task, run):
    return [ref_json["clips"][c]["tasks"][task][run]["ids"] for c in BATCH]


@pytest.fixture(scope="module")
def eager_model():
    from mooer.api import MooER

    return MooER.from_pretrained(OFFICIAL_TINY, device="cpu", dtype="float32", attn_implementation="eager")


@pytest.mark.parametrize("preset,task,run", RUNS)
def test_parallel_featurisation_is_exact(tiny_model, ref_json, preset, task, run):
    results = tiny_model.transcribe(PATHS, task=task, batch_size=4, decoding=preset, num_workers=4)
    assert [r.token_ids for r in results] == reference_ids(ref_json, task, run)
    assert [r.key for r in results] == list(BATCH)  # input order kept
    assert tiny_model.last_stats.workers == 4


def test_parallel_features_equal_sequential(tiny_model):
    sequential = [tiny_model.featurize(p)[0] for p in PATHS]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda p: tiny_model.featurize(p)[0], PATHS))
    for a, b in zip(sequential, threaded):
        assert torch.equal(a, b)


def test_llm_attention_defaults_to_sdpa_and_kv_cache(tiny_model):
    assert tiny_model.network.llm.config._attn_implementation == "sdpa"
    assert tiny_model.network.llm.config.use_cache is True  # and HF forces it with inputs_embeds


@pytest.mark.parametrize("preset,task,run", RUNS)
def test_eager_attention_gives_the_same_ids(eager_model, ref_json, preset, task, run):
    assert eager_model.network.llm.config._attn_implementation == "eager"
    results = eager_model.transcribe(PATHS, task=task, batch_size=4, decoding=preset, num_workers=1)
    assert [r.token_ids for r in results] == reference_ids(ref_json, task, run)


def test_transcribe_reports_padding(tiny_model):
    tiny_model.transcribe(PATHS[:2] + PATHS[3:], task="ast", batch_size=2, decoding="greedy")
    # demo, zh1, en1 -> T6 110, 51, 52, sorted 110, 52 | 51
    stats = tiny_model.last_stats
    assert (stats.features.real, stats.features.total, stats.features.batches) == (213, 220 + 51, 2)
    prompt = len(tiny_model.prompts.prompt_ids("ast"))
    assert stats.tokens.real == 55 + 26 + 25 + 3 * prompt
    assert stats.tokens.total == 2 * (55 + prompt) + (25 + prompt)
    assert stats.inputs == 3 and stats.failed == 0
    assert stats.audio_seconds == pytest.approx((105405 + 49298 + 49840) / 16000, abs=1e-3)
    assert "padding" in stats.summary()


def test_padding_report_on_a_hand_made_batch():
    s = PaddingStats()
    s.add([10, 10, 5])
    s.add([4])
    assert (s.rows, s.batches, s.real, s.total, s.padded) == (4, 2, 29, 34, 5)
    assert s.fraction == pytest.approx(5 / 34)
    lengths = [3, 10, 4, 9]
    assert batched_padding_fraction(lengths, 2, sort=False) == pytest.approx(1 - 26 / 38)  # [3,10] [4,9]: 20 + 18
    assert batched_padding_fraction(lengths, 2, sort=True) == pytest.approx(1 - 26 / 28)  # [10,9] [4,3]
    assert batched_padding_fraction(lengths, 1) == 0.0
    assert PaddingStats().fraction == 0.0


def test_errors_are_isolated_in_order_and_streamed(tiny_model, tmp_path, ref_json):
    inputs = [str(AUDIO / "short.wav"), str(tmp_path / "missing.wav"), str(AUDIO / "en1.wav")]
    seen = []
    results = tiny_model.transcribe(inputs, task="ast", decoding="greedy", num_workers=3, on_results=seen.extend)
    assert [r.key for r in results] == ["short", "missing", "en1"]
    assert results[1].error and not results[0].error and not results[2].error
    assert results[0].token_ids == ref_json["clips"]["short"]["tasks"]["ast"]["greedy"]["ids"]
    assert results[2].token_ids == ref_json["clips"]["en1"]["tasks"]["ast"]["greedy"]["ids"]
    assert sorted(r.key for r in seen) == ["en1", "missing", "short"]  # each result exactly once
    assert tiny_model.last_stats.failed == 1


def test_int8_quantisation_runs_and_reports_agreement(ref_json):
    """Not exact: ids may differ from fp32. It must run, give valid ids and shrink the weights."""
    from mooer.api import MooER

    model = MooER.from_pretrained(OFFICIAL_TINY, device="cpu", dtype="float32", quantize="int8")
    info = model.network.quantized
    assert info["layers"] == 2 * 7 + 1 and info["bytes_after"] * 4 == info["bytes_before"]
    assert quantize_llm(model) is info  # idempotent
    vocab = model.network.llm.get_input_embeddings().weight.shape[0]
    results = model.transcribe(PATHS, task="ast", batch_size=4, decoding="greedy")
    agree = 0
    for r, ref in zip(results, reference_ids(ref_json, "ast", "greedy")):
        assert r.ok and r.token_ids and all(0 <= t < vocab for t in r.token_ids)
        assert r.token_ids[-1] == model.network.eos_id or len(r.token_ids) == 500
        same = 0
        for a, b in zip(r.token_ids, ref):
            if a != b:
                break
            same += 1
        agree += same == len(ref) == len(r.token_ids)
    print(f"int8 greedy ast: {agree}/{len(BATCH)} runs identical to the fp32 reference")


def test_quantize_and_compile_guards(tiny_model):
    with pytest.raises(ValueError, match="int4"):
        quantize_llm(tiny_model, "int4")
    assert compile_model(tiny_model) == {}  # CPU: a no-op unless forced


def test_cli_quantize_flag(capsys):
    from mooer.cli import main

    code = main(["transcribe", str(AUDIO / "short.wav"), "--model", str(OFFICIAL_TINY), "--device", "cpu",
                 "--preset", "greedy", "--quantize", "int8"])
    assert code == 0
    assert capsys.readouterr().out.strip() != ""


@pytest.mark.parametrize("batch_size", [4, 1])
def test_shared_beam_prefill_is_exact(tiny_model, ref_json, batch_size):
    """On by default: one prefill per utterance instead of per beam; official ids unchanged, and the same
    as HF's own path with the option switched off."""
    assert tiny_model.network.shared_prefill
    results = tiny_model.transcribe(PATHS, task="ast", batch_size=batch_size, decoding="official")
    assert [r.token_ids for r in results] == reference_ids(ref_json, "ast", "beam")
    if batch_size == 4:
        tiny_model.network.shared_prefill = False
        try:
            plain = tiny_model.transcribe(PATHS, task="ast", batch_size=batch_size, decoding="official")
        finally:
            tiny_model.network.shared_prefill = True
        assert [r.token_ids for r in plain] == [r.token_ids for r in results]
