"""Golden tests: every stage of the inference path against the official implementation's outputs.

Tolerances are those of the fixtures README §7; ids and texts must be identical.
"""

from __future__ import annotations

import pytest
import torch

from fixtures_path import AUDIO, CLIPS
from mooer.decoding import PRESETS
from mooer.features import audio_tokens
from mooer.prompting import collate_tokens, pad_features

TASKS = ("asr", "ast")
RUNS = [("official", "beam"), ("greedy", "greedy")]


def close(a, b, atol):
    diff = (a.float() - b.float()).abs().max().item()
    assert diff <= atol, f"max abs diff {diff:.3g} > {atol}"
    return diff


@pytest.mark.parametrize("clip", CLIPS)
def test_encoder_from_reference_features(tiny_model, ref_tensors, clip):
    feats = ref_tensors[f"{clip}/feats"]
    with torch.no_grad():
        out = tiny_model.network.encoder(feats[None], torch.tensor([feats.shape[0]]))[0]
    close(out, ref_tensors[f"{clip}/encoder_out"], 1e-5)  # 1e-5 also catches a wrong LayerNorm eps


@pytest.mark.parametrize("clip", CLIPS)
def test_adapter_from_reference_encoder_out(tiny_model, ref_tensors, clip):
    with torch.no_grad():
        out = tiny_model.network.adapter(ref_tensors[f"{clip}/encoder_out"][None])[0]
    close(out, ref_tensors[f"{clip}/adapter_out"], 1e-5)


@pytest.mark.parametrize("clip", CLIPS)
def test_end_to_end_embeddings(tiny_model, ref_tensors, ref_json, clip):
    feats, _ = tiny_model.featurize(AUDIO / f"{clip}.wav")
    close(feats, ref_tensors[f"{clip}/feats"], 1e-3)
    lengths = torch.tensor([feats.shape[0]])
    with torch.no_grad():
        enc = tiny_model.network.encoder(feats[None], lengths)[0]
        close(enc, ref_tensors[f"{clip}/encoder_out"], 5e-4)
        adapter_out = tiny_model.network.adapter(enc[None])[0]
        close(adapter_out, ref_tensors[f"{clip}/adapter_out"], 1e-4)
    assert adapter_out.shape[0] == ref_json["clips"][clip]["L"]
    for task in TASKS:
        prompt = tiny_model.prompts.prompt_ids(task)
        assert prompt == ref_tensors[f"{clip}/{task}/prompt_ids"].tolist()
        tokens = collate_tokens([adapter_out.shape[0]], [prompt], tiny_model.prompts.pad_id)
        assert torch.equal(tokens.input_ids[0], ref_tensors[f"{clip}/{task}/input_ids"])
        assert torch.equal(tokens.modality_mask[0], ref_tensors[f"{clip}/{task}/modality_mask"])
        assert torch.equal(tokens.attention_mask[0], ref_tensors[f"{clip}/{task}/attention_mask"])
        with torch.no_grad():
            embeds = tiny_model.network.embed(tokens, adapter_out[None])[0]
        ref = ref_tensors[f"{clip}/{task}/inputs_embeds"]
        close(embeds, ref, 1e-4)
        L = adapter_out.shape[0]
        assert torch.equal(embeds[L:], ref[L:]), "prompt positions must be the exact embedding lookup"


def test_merged_lora_weights(tiny_model, ref_tensors):
    llm = tiny_model.network.llm
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        close(llm.get_parameter(name), ref_tensors[f"merged/{name}"], 1e-6)
    info = tiny_model.loaded.info["lora"]
    assert info["r"] == 8 and info["lora_alpha"] == 16 and info["merged_layers"] == 14


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("task", TASKS)
def test_first_logits_and_generation_from_reference_embeds(tiny_model, ref_tensors, ref_json, clip, task):
    embeds = ref_tensors[f"{clip}/{task}/inputs_embeds"][None]
    mask = torch.ones(embeds.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        logits = tiny_model.network.llm(inputs_embeds=embeds).logits[0, -1]
    close(logits, ref_tensors[f"{clip}/{task}/first_logits"], 1e-3)
    for preset, name in RUNS:
        ids = tiny_model.network.generate(embeds, mask, PRESETS[preset])[0]
        assert ids == ref_json["clips"][clip]["tasks"][task][name]["ids"], f"{preset} ids differ"


@pytest.mark.parametrize("preset,name", RUNS)
@pytest.mark.parametrize("task", TASKS)
def test_transcribe_end_to_end_single_and_batched(tiny_model, ref_json, preset, name, task):
    files = [AUDIO / f"{c}.wav" for c in CLIPS]
    for batch_size in (1, 3):
        results = tiny_model.transcribe(files, task=task, decoding=preset, batch_size=batch_size)
        for clip, res in zip(CLIPS, results):
            expected = ref_json["clips"][clip]["tasks"][task][name]
            assert res.error is None
            assert res.key == clip
            assert res.token_ids == expected["ids"]
            assert res.text == expected["text"]


def test_reference_batch_layout_and_raw_outputs(tiny_model, ref_tensors, ref_json):
    """The official 4-row batch: left-padded tokens, right-padded features, identical raw generations."""
    batch = ref_json["batch"]
    clips = batch["clips"]
    feats = [ref_tensors[f"{c}/feats"] for c in clips]
    padded, lengths = pad_features(feats)
    assert torch.equal(padded, ref_tensors["batch/ast/audio_mel"])
    assert lengths.tolist() == ref_tensors["batch/ast/audio_mel_reallen"].tolist()
    L = [audio_tokens(int(n)) for n in lengths]
    prompt = tiny_model.prompts.prompt_ids("ast")
    tokens = collate_tokens(L, [prompt] * len(L), tiny_model.prompts.pad_id)
    for field in ("input_ids", "attention_mask", "modality_mask"):
        assert torch.equal(getattr(tokens, field), ref_tensors[f"batch/ast/{field}"]), field
    with torch.no_grad():
        enc = tiny_model.network.encoder(padded, lengths)
        adapter_out = tiny_model.network.adapter(enc)
        embeds = tiny_model.network.embed(tokens, adapter_out)
    valid = lengths.max().item()
    for i, n in enumerate(lengths.tolist()):  # padded frames may differ; valid frames must not
        close(enc[i, :n], ref_tensors["batch/ast/encoder_out"][i, :n], 1e-5)
    close(adapter_out[:, : valid // 2], ref_tensors["batch/ast/adapter_out"], 1e-4)
    close(embeds * tokens.attention_mask[..., None], ref_tensors["batch/ast/inputs_embeds"]
          * tokens.attention_mask[..., None], 1e-4)
    for preset, name in RUNS:
        rows = tiny_model.network.generate(embeds, tokens.attention_mask, PRESETS[preset])
        assert rows == [r["ids"] for r in batch[name]["rows"]]
        for clip, row in zip(clips, rows):
            assert row == ref_json["clips"][clip]["tasks"]["ast"][name]["ids"]


def test_generation_ignores_llm_generation_config(tiny_model):
    """The fixture's generation_config.json has do_sample/top_k/repetition_penalty=1.05: none may leak."""
    cfg = tiny_model.network.generation_config(PRESETS["official"])
    assert cfg.do_sample is False and cfg.num_beams == 4 and cfg.repetition_penalty == 1.0
    assert cfg.eos_token_id == 2002 and cfg.length_penalty == 0.8 and cfg.max_new_tokens == 200
    assert cfg.sequence_bias == [[[2002], -0.2]]
    stored = tiny_model.network.llm.generation_config
    assert not stored.do_sample and stored.repetition_penalty in (None, 1.0) and stored.top_k in (None, 0, 50)
    greedy = tiny_model.network.generation_config(PRESETS["greedy"])
    assert greedy.num_beams == 1 and greedy.max_new_tokens == 500 and greedy.sequence_bias is None
