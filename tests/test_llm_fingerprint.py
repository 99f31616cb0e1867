"""The vllm engine's cache key (llm_fingerprint) for the merged LLM: needs torch + transformers, not vLLM."""

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from mooer.inference.vllm_engine import llm_fingerprint


def _tiny(seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         intermediate_size=64, vocab_size=100, tie_word_embeddings=True)
    return Qwen2ForCausalLM._from_config(config, dtype=torch.float32).eval()


def test_same_weights_reloaded_from_disk_share_the_cache_entry(tmp_path):
    # save_pretrained adds architectures, from_pretrained the path: bookkeeping, not a different model
    llm = _tiny(0)
    llm.save_pretrained(tmp_path)
    reloaded = Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert reloaded.config._name_or_path == str(tmp_path)
    assert llm_fingerprint(reloaded) == llm_fingerprint(llm)


def test_different_weights_or_config_get_different_entries():
    llm = _tiny(0)
    assert llm_fingerprint(_tiny(1)) != llm_fingerprint(llm)
    other = _tiny(0)
    other.config.rope_theta = 1234.0
    assert llm_fingerprint(other) != llm_fingerprint(llm)
