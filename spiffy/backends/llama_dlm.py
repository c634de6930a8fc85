"""LLaMA-family diffusion LM: LLaMA blocks with bidirectional attention and Dream's one-position shift.

This is the shape of a diffusion LM adapted from an autoregressive LLaMA checkpoint (SmolLM2 here;
DiffuLLaMA, Dream from Qwen2.5): the weights keep their causal-LM names and meaning, attention sees the
whole sequence, and the hidden state at position i-1 still predicts token i (``logit_shift`` = 1). It is
Dream's module tree without q/k/v biases and with tied embeddings, so the numerics are the shared ones
of :mod:`spiffy.backends.core`.
"""
from __future__ import annotations

from .dream import DreamConfig, DreamModel


class LlamaDLMConfig(DreamConfig):
    model_type = "llama_dlm"

    def __init__(self, vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                 rms_norm_eps=1e-5, tie_word_embeddings=True, mask_token_id=16, pad_token_id=2, bos_token_id=1,
                 eos_token_id=2, eot_token_id=None, attention_bias=False, **kwargs):
        self.attention_bias = attention_bias
        super().__init__(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
                         rope_theta=rope_theta, rms_norm_eps=rms_norm_eps, tie_word_embeddings=tie_word_embeddings,
                         mask_token_id=mask_token_id, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, eot_token_id=eot_token_id, **kwargs)


class LlamaDLMModel(DreamModel):
    config_class = LlamaDLMConfig
