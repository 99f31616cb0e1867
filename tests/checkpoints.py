"""Build small official-layout checkpoints with random weights, so tests do not hinge on one fixture."""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import torch

from fixtures_path import AM_MVN, OFFICIAL_TINY
from mooer.models.sanm import SANMEncoder, SANMEncoderConfig

TOKENIZER_FILES = ("merges.txt", "tokenizer.json", "tokenizer_config.json", "vocab.json")
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "gate_proj", "down_proj"]


def make_official_checkpoint(
    root: Path,
    *,
    variant: str = "asr",
    d_model: int = 32,
    num_blocks: int = 2,
    llm_hidden: int = 48,
    downsample: int = 2,
    r: int = 4,
    alpha: int = 8,
    targets: list[str] | None = None,
    lora_style: str = "old",
    seed: int = 0,
) -> Path:
    """Write ``root`` in the release layout: encoder, one task dir (adapter + LoRA), an LLM dir."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    targets = targets or ALL_TARGETS
    enc_dir = root / "paraformer_encoder"
    enc_dir.mkdir(parents=True)
    shutil.copy(AM_MVN, enc_dir / "am.mvn")
    encoder = SANMEncoder(SANMEncoderConfig(d_model=d_model, attention_heads=4, linear_units=2 * d_model,
                                            num_blocks=num_blocks))
    for p in encoder.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.save(OrderedDict(encoder.state_dict()), enc_dir / "paraformer-encoder.pth")

    llm_dir = root / "TinyLLM"
    config = Qwen2Config(vocab_size=2003, hidden_size=llm_hidden, intermediate_size=2 * llm_hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=2000, eos_token_id=2002,
                         tie_word_embeddings=False)
    llm = Qwen2ForCausalLM(config)
    llm.save_pretrained(llm_dir)
    for name in TOKENIZER_FILES:
        shutil.copy(OFFICIAL_TINY / "Qwen2-tiny" / name, llm_dir / name)

    task = root / variant
    (task / "lora_weights").mkdir(parents=True)
    hidden = 64
    torch.save(OrderedDict({
        "encoder_projector.linear1.weight": torch.randn(hidden, d_model * downsample) * 0.1,
        "encoder_projector.linear1.bias": torch.randn(hidden) * 0.1,
        "encoder_projector.linear2.weight": torch.randn(llm_hidden, hidden) * 0.1,
        "encoder_projector.linear2.bias": torch.randn(llm_hidden) * 0.1,
    }), task / "adapter_project.pt")
    lora = OrderedDict()
    infix = "" if lora_style == "old" else ".default"
    for name, module in llm.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in targets:
            lora[f"base_model.model.{name}.lora_A{infix}.weight"] = torch.randn(r, module.in_features) * 0.1
            lora[f"base_model.model.{name}.lora_B{infix}.weight"] = torch.randn(module.out_features, r) * 0.1
    torch.save(lora, task / "lora_weights" / "adapter_model.bin")
    (task / "lora_weights" / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.05,
        "bias": "none", "target_modules": targets, "fan_in_fan_out": False, "inference_mode": True,
        "base_model_name_or_path": "pretrained_models/TinyLLM",
    }))
    return root
