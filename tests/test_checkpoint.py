"""Strict checkpoint loading, LoRA configurations, and the own format's lossless round trip."""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict

import pytest
import torch

from checkpoints import ALL_TARGETS, make_official_checkpoint
from fixtures_path import AUDIO, OFFICIAL_TINY
from mooer.api import MooER
from mooer.checkpoint import load_checkpoint
from mooer.errors import CheckpointError


def copy_fixture(tmp_path):
    dst = tmp_path / "release"
    shutil.copytree(OFFICIAL_TINY, dst)
    return dst


def test_renamed_encoder_key_fails_loudly(tmp_path):
    root = copy_fixture(tmp_path)
    path = root / "paraformer_encoder" / "paraformer-encoder.pth"
    state = torch.load(path, weights_only=True)
    state["encoders.1.module_fn.norm1.weight"] = state.pop("encoders.1.norm1.weight")  # spec 15.3
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(root, device="cpu")
    msg = str(e.value)
    assert "encoders.1.norm1.weight" in msg and "encoders.1.module_fn.norm1.weight" in msg
    assert "paraformer-encoder.pth" in msg


def test_adapter_without_prefix_fails(tmp_path):
    root = copy_fixture(tmp_path)
    path = root / "asr_ast_mtl" / "adapter_project.pt"
    state = torch.load(path, weights_only=True)
    torch.save(OrderedDict((k.replace("encoder_projector.", ""), v) for k, v in state.items()), path)
    with pytest.raises(CheckpointError, match="adapter_project.pt: unexpected keys"):
        load_checkpoint(root, device="cpu")


def test_missing_lora_key_fails(tmp_path):
    root = copy_fixture(tmp_path)
    path = root / "asr_ast_mtl" / "lora_weights" / "adapter_model.bin"
    state = torch.load(path, weights_only=True)
    del state["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"layers\.1\.mlp\.up_proj\.lora_B"):
        load_checkpoint(root, device="cpu")


def test_unexpected_lora_key_fails(tmp_path):
    root = copy_fixture(tmp_path)
    path = root / "asr_ast_mtl" / "lora_weights" / "adapter_model.bin"
    state = torch.load(path, weights_only=True)
    state["base_model.model.model.layers.0.mlp.extra_proj.lora_A.weight"] = torch.zeros(8, 64)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="extra_proj"):
        load_checkpoint(root, device="cpu")


def test_pickled_objects_are_refused(tmp_path):
    root = copy_fixture(tmp_path)
    torch.save({"x": object()}, root / "asr_ast_mtl" / "adapter_project.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(root, device="cpu")


def test_not_a_model_directory(tmp_path):
    with pytest.raises(CheckpointError, match="neither the official release layout"):
        load_checkpoint(tmp_path, device="cpu")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope", device="cpu")


def expected_merge(root, variant, name, r, alpha):
    from safetensors.torch import load_file

    w = load_file(str(root / "TinyLLM" / "model.safetensors"))[f"{name}.weight"].double()
    lora = torch.load(root / variant / "lora_weights" / "adapter_model.bin", weights_only=True)
    a = next(v for k, v in lora.items() if f"{name}.lora_A" in k).double()
    b = next(v for k, v in lora.items() if f"{name}.lora_B" in k).double()
    return (w + (alpha / r) * (b @ a)).float()


@pytest.mark.parametrize("r,alpha,targets,style", [
    (4, 8, ALL_TARGETS, "old"),
    (16, 16, ["q_proj", "v_proj"], "old"),
    (2, 32, ["o_proj", "down_proj"], "new"),
])
def test_lora_configs_are_read_not_assumed(tmp_path, r, alpha, targets, style):
    root = make_official_checkpoint(tmp_path / "ck", r=r, alpha=alpha, targets=targets, lora_style=style)
    loaded = load_checkpoint(root, device="cpu")
    assert loaded.info["lora"]["r"] == r and loaded.info["lora"]["lora_alpha"] == alpha
    assert loaded.info["lora"]["merged_layers"] == 2 * len(targets)
    llm = loaded.model.llm
    from safetensors.torch import load_file

    base = load_file(str(root / "TinyLLM" / "model.safetensors"))
    for name, module in llm.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers.0"):
            if name.split(".")[-1] in targets:
                want = expected_merge(root, "asr", name, r, alpha)
                assert (module.weight - want).abs().max() < 1e-6, name
            else:
                assert torch.equal(module.weight, base[f"{name}.weight"]), f"{name} must be untouched"
    # architecture inferred from the checkpoint, not assumed
    assert loaded.info["encoder"]["d_model"] == 32 and loaded.info["encoder"]["num_blocks"] == 2
    assert loaded.info["adapter"]["llm_dim"] == 48 and loaded.info["adapter"]["hidden_dim"] == 64


def test_downsample_rate_inferred(tmp_path):
    root = make_official_checkpoint(tmp_path / "ck", downsample=3)
    model = MooER.from_pretrained(root, device="cpu")
    assert model.network.adapter.k == 3
    res = model.transcribe(AUDIO / "zh1.wav", task="asr", decoding="greedy")[0]
    assert res.error is None and res.token_ids


def test_variant_selection(tmp_path):
    root = make_official_checkpoint(tmp_path / "ck", variant="asr")
    shutil.copytree(root / "asr", root / "ast")
    with pytest.raises(CheckpointError, match="choose one with --variant"):
        load_checkpoint(root, device="cpu")
    assert load_checkpoint(root, variant="ast", device="cpu").info["variant"] == "ast"
    with pytest.raises(CheckpointError, match="no task directory 'mtl'"):
        load_checkpoint(root, variant="mtl", device="cpu")
    shutil.copytree(root / "asr", root / "asr_ast_mtl")
    assert load_checkpoint(root, device="cpu").info["variant"] == "asr_ast_mtl"  # the default


def test_llm_directory_given_separately(tmp_path):
    root = make_official_checkpoint(tmp_path / "ck")
    shutil.move(root / "TinyLLM", tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="--llm"):
        load_checkpoint(root, device="cpu")
    assert load_checkpoint(root, llm=tmp_path / "elsewhere", device="cpu").info["llm"].endswith("elsewhere")


def test_own_format_round_trip_is_lossless(tiny_model, tmp_path, ref_json):
    out = tiny_model.save_pretrained(tmp_path / "native")
    assert json.loads((out / "config.json").read_text())["mooer_format"] == 1
    # written so that the floor transformers (4.56) reads it as 5.x does (scripts/test_floor.sh runs this)
    llm_config = json.loads((out / "llm" / "config.json").read_text())
    assert llm_config.get("rope_theta") == 1e6
    assert not isinstance(json.loads((out / "llm" / "tokenizer_config.json").read_text())
                          .get("extra_special_tokens"), list)
    again = MooER.from_pretrained(out, device="cpu")
    a, b = tiny_model.network.state_dict(), again.network.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(again.features.cmvn.shift, tiny_model.features.cmvn.shift)
    assert again.loaded.prompts == tiny_model.loaded.prompts and again.default_task == "ast"
    res = again.transcribe(AUDIO / "demo.wav", task="ast")[0]
    assert res.token_ids == ref_json["clips"]["demo"]["tasks"]["ast"]["beam"]["ids"]
    # strict on the own format too
    from safetensors.torch import load_file, save_file

    state = load_file(str(out / "model.safetensors"))
    state["adapter.extra"] = torch.zeros(1)
    save_file(state, str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match="adapter.*extra"):
        load_checkpoint(out, device="cpu")
