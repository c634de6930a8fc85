"""LLaDA family (LLaDA-8B-Base/Instruct, LLaDA-1.5): the project's own implementation.

Bidirectional LLaMA-style blocks (RMSNorm, SwiGLU, RoPE, no biases). Module and parameter names
follow the published checkpoints (``model.transformer.blocks.{i}.q_proj.weight`` …) and the config
keys follow their ``config.json`` (``d_model``, ``n_layers``, ``mlp_hidden_size`` …), so the real
safetensors load as they are, without ``trust_remote_code``.
"""
from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .core import block_forward, stack_forward
from .layers import RMSNorm, Rotary


class LLaDAConfig(PretrainedConfig):
    model_type = "llada"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "num_key_value_heads": "n_kv_heads",
        "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
    }

    def __init__(self, d_model=4096, n_heads=32, n_kv_heads=None, n_layers=32, mlp_hidden_size=12288,
                 vocab_size=126464, embedding_size=None, rope_theta=500000.0, max_sequence_length=4096,
                 rms_norm_eps=1e-5, weight_tying=False, include_bias=False, mask_token_id=126336,
                 eos_token_id=126081, pad_token_id=126081, bos_token_id=126080, eot_token_id=None,
                 **kwargs):
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.n_layers = n_layers
        self.mlp_hidden_size = mlp_hidden_size
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size or vocab_size
        self.rope_theta = rope_theta
        self.max_sequence_length = max_sequence_length
        self.rms_norm_eps = rms_norm_eps
        self.weight_tying = weight_tying
        self.include_bias = include_bias
        self.mask_token_id = mask_token_id
        self.eot_token_id = eot_token_id
        kwargs.pop("tie_word_embeddings", None)
        kwargs.pop("use_cache", None)
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                         tie_word_embeddings=weight_tying, **kwargs)


class LLaDABlock(nn.Module):
    def __init__(self, c: LLaDAConfig):
        super().__init__()
        hd = c.d_model // c.n_heads
        bias = c.include_bias
        self.n_heads, self.n_kv_heads = c.n_heads, c.n_kv_heads
        self.attn_norm = RMSNorm(c.d_model, c.rms_norm_eps)
        self.ff_norm = RMSNorm(c.d_model, c.rms_norm_eps)
        self.q_proj = nn.Linear(c.d_model, c.n_heads * hd, bias=bias)
        self.k_proj = nn.Linear(c.d_model, c.n_kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(c.d_model, c.n_kv_heads * hd, bias=bias)
        self.attn_out = nn.Linear(c.d_model, c.d_model, bias=bias)
        self.ff_proj = nn.Linear(c.d_model, c.mlp_hidden_size, bias=bias)  # gate (SiLU applied)
        self.up_proj = nn.Linear(c.d_model, c.mlp_hidden_size, bias=bias)
        self.ff_out = nn.Linear(c.mlp_hidden_size, c.d_model, bias=bias)

    def forward(self, x, cos, sin, mask, context_kv):
        return block_forward(x, cos, sin, mask, context_kv, attn_norm=self.attn_norm, q_proj=self.q_proj,
                             k_proj=self.k_proj, v_proj=self.v_proj, o_proj=self.attn_out,
                             ff_norm=self.ff_norm, gate_proj=self.ff_proj, up_proj=self.up_proj,
                             down_proj=self.ff_out, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads)


class LLaDAModel(nn.Module):
    def __init__(self, c: LLaDAConfig):
        super().__init__()
        t = nn.ModuleDict(dict(
            wte=nn.Embedding(c.embedding_size, c.d_model),
            blocks=nn.ModuleList(LLaDABlock(c) for _ in range(c.n_layers)),
            ln_f=RMSNorm(c.d_model, c.rms_norm_eps),
        ))
        if not c.weight_tying:
            t["ff_out"] = nn.Linear(c.d_model, c.embedding_size, bias=c.include_bias)
        self.transformer = t


class LLaDAModelLM(PreTrainedModel):
    config_class = LLaDAConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.rotary = Rotary(config.d_model // config.n_heads, config.rope_theta)
        self.post_init()

    def _init_weights(self, module):
        std = 0.02
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    # --- pieces used by stack_forward
    def embed(self, ids):
        return self.model.transformer.wte(ids)

    def blocks_list(self):
        return self.model.transformer.blocks

    def final_norm(self, x):
        return self.model.transformer.ln_f(x)

    def head(self, x):
        t = self.model.transformer
        if self.config.weight_tying:
            return x @ t.wte.weight.t()
        return t.ff_out(x)

    def get_input_embeddings(self):
        return self.model.transformer.wte

    def forward(self, input_ids, position_ids=None, attention_mask=None, context=None, return_kv=False,
                logits_index=None, key_valid=None, **_):
        return stack_forward(self, input_ids, position_ids, attention_mask, context, return_kv, logits_index,
                             key_valid)
