"""Dream family (Dream-v0-Base/Instruct-7B): Qwen2 blocks with bidirectional attention.

Parameter names and config keys follow the published checkpoints (``model.layers.{i}.self_attn.q_proj``
with q/k/v biases, ``lm_head``). Dream predicts with a one-position shift: the logits at position
i-1 predict token i. The backend (``spiffy.backends.backend``) applies the shift; this module just
returns logits at the hidden positions it is asked for.
"""
from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .core import block_forward, stack_forward
from .layers import RMSNorm, Rotary


class DreamConfig(PretrainedConfig):
    model_type = "Dream"

    def __init__(self, vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=131072,
                 rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False, mask_token_id=151666,
                 pad_token_id=151643, bos_token_id=151643, eos_token_id=151643, eot_token_id=None, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.mask_token_id = mask_token_id
        self.eot_token_id = eot_token_id
        kwargs.pop("use_cache", None)
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)


class DreamAttention(nn.Module):
    def __init__(self, c: DreamConfig):
        super().__init__()
        hd = c.hidden_size // c.num_attention_heads
        bias = getattr(c, "attention_bias", True)   # Qwen2 (Dream) has q/k/v biases, LLaMA does not
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * hd, bias=bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * hd, bias=bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * hd, bias=bias)
        self.o_proj = nn.Linear(c.num_attention_heads * hd, c.hidden_size, bias=False)


class DreamMLP(nn.Module):
    def __init__(self, c: DreamConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)


class DreamDecoderLayer(nn.Module):
    def __init__(self, c: DreamConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads = c.num_attention_heads, c.num_key_value_heads
        self.self_attn = DreamAttention(c)
        self.mlp = DreamMLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask, context_kv):
        a, m = self.self_attn, self.mlp
        return block_forward(x, cos, sin, mask, context_kv, attn_norm=self.input_layernorm, q_proj=a.q_proj,
                             k_proj=a.k_proj, v_proj=a.v_proj, o_proj=a.o_proj,
                             ff_norm=self.post_attention_layernorm, gate_proj=m.gate_proj, up_proj=m.up_proj,
                             down_proj=m.down_proj, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads)


class DreamBaseModel(nn.Module):
    def __init__(self, c: DreamConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DreamDecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class DreamModel(PreTrainedModel):
    config_class = DreamConfig
    base_model_prefix = "model"
    _no_split_modules = ["DreamDecoderLayer"]
    _supports_sdpa = True

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        self.model = DreamBaseModel(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary = Rotary(config.hidden_size // config.num_attention_heads, config.rope_theta)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def embed(self, ids):
        return self.model.embed_tokens(ids)

    def blocks_list(self):
        return self.model.layers

    def final_norm(self, x):
        return self.model.norm(x)

    def head(self, x):
        if self.config.tie_word_embeddings:
            return x @ self.model.embed_tokens.weight.t()
        return self.lm_head(x)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids, position_ids=None, attention_mask=None, context=None, return_kv=False,
                logits_index=None, key_valid=None, **_):
        return stack_forward(self, input_ids, position_ids, attention_mask, context, return_kv, logits_index,
                             key_valid)
