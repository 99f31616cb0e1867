"""Widened heads compute what the original Qwen2 computes (what lets vLLM's CPU attention serve the fixture)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mooer.models.head_widening import CPU_HEAD_SIZES, widen_heads, widened_head_size


def test_widened_head_size():
    assert widened_head_size(128) == 128 and widened_head_size(16) == 32 and widened_head_size(8) == 32
    assert widened_head_size(40) == 80 and widened_head_size(48) == 96
    assert widened_head_size(33) is None
    assert all(widened_head_size(h) == h for h in CPU_HEAD_SIZES)


@pytest.mark.parametrize("wide", [32, 64])
def test_widened_llama_gives_the_same_logits_and_greedy_ids(tiny_model, wide):
    qwen = tiny_model.network.llm
    config, state = widen_heads(qwen.config.to_dict(), qwen.state_dict(), wide)
    llama = LlamaForCausalLM(LlamaConfig.from_dict(config)).eval()
    llama.load_state_dict(state, strict=True)  # every tensor has its place, o_proj gained a (zero) bias
    assert llama.config.head_dim == wide and llama.model.layers[0].self_attn.q_proj.out_features == 4 * wide
    torch.manual_seed(0)
    embeds = torch.randn(2, 41, qwen.config.hidden_size) * qwen.get_input_embeddings().weight.std()
    mask = torch.ones(2, 41, dtype=torch.long)
    mask[1, :7] = 0  # left padding, as batches have
    with torch.no_grad():
        a = qwen(inputs_embeds=embeds, attention_mask=mask).logits
        b = llama(inputs_embeds=embeds, attention_mask=mask).logits
    assert (a - b)[0].abs().max() < 1e-4 and (a - b)[1, 7:].abs().max() < 1e-4
    kwargs = dict(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=20, do_sample=False, num_beams=1,
                  repetition_penalty=1.0, pad_token_id=0, eos_token_id=None)
    assert torch.equal(qwen.generate(**kwargs), llama.generate(**kwargs))


def test_widening_refuses_what_it_cannot_keep_exact():
    config = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
    with pytest.raises(ValueError, match="cannot widen"):
        widen_heads(config, {}, 40)  # not a multiple of 16
