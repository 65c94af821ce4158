"""Tiny random MoE models of every supported family, saved with `save_pretrained`: for tests, benchmarks
and trying ttscale offline, where no pretrained MoE weights can be downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast)

COMMON = dict(vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=64, max_position_embeddings=512, tie_word_embeddings=False)

# model_type -> config overrides (8 experts, top-2 everywhere)
FAMILIES = {
    # SGLang's OLMoE sizes k_norm by the hidden size (as OLMoE checkpoints are): as many KV heads as heads
    "olmoe": dict(num_experts=8, num_experts_per_tok=2, num_key_value_heads=4),
    "qwen2_moe": dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=32),
    "qwen3_moe": dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, head_dim=16),
    "mixtral": dict(num_local_experts=8, num_experts_per_tok=2),
    "deepseek_v2": dict(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
                        first_k_dense_replace=0, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8,
                        qk_nope_head_dim=8, v_head_dim=16, n_group=1, topk_group=1, topk_method="greedy",
                        num_key_value_heads=4),
    "deepseek_v3": dict(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
                        first_k_dense_replace=0, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8,
                        qk_nope_head_dim=8, v_head_dim=16, n_group=1, topk_group=1,
                        num_key_value_heads=4),
    "gpt_oss": dict(num_local_experts=8, num_experts_per_tok=2, head_dim=16, sliding_window=64,
                    layer_types=["sliding_attention", "full_attention"]),
    "granitemoe": dict(num_local_experts=8, num_experts_per_tok=2),
}

CORPUS = ["The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) , . ? !",
          "Question: what is 12 plus 30? Answer: 42.", "def add(a, b):\n    return a + b\n"] * 4

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tiny_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=COMMON["vocab_size"], special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_model(family: str, directory: Path, seed: int = 0, chat_template: bool = True, **overrides) -> Path:
    """Build a random tiny model of `family` from its config and save it, tokenizer beside it."""
    tokenizer = tiny_tokenizer(chat_template)
    config = AutoConfig.for_model(family, **{**COMMON, **FAMILIES.get(family, {}), **overrides},
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                  bos_token_id=None)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger router weights, so routing differs clearly between tokens
        for name, p in model.named_parameters():
            if name.endswith(("gate.weight", "router.weight")):
                p.normal_(0, 0.5)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)


def save_tiny_reward_model(directory: Path, seed: int = 0) -> Path:
    """A random tiny sequence classifier with one label: an outcome reward model for tests."""
    from transformers import AutoModelForSequenceClassification

    tokenizer = tiny_tokenizer()
    config = AutoConfig.for_model("llama", **COMMON, num_labels=1, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)
