"""Checkpoint round trip in the published layouts (config keys + safetensors parameter names of
LLaDA-8B and Dream-7B), through the public loader, and clear errors for bad checkpoints."""
import json

import pytest
import torch
from safetensors.torch import save_file

from spiffy import ModelLoadError, load_backend
from spiffy.backends.tiny import tiny_backend

LLADA_CONFIG = {  # the key set of GSAI-ML/LLaDA-8B-Instruct's config.json, at tiny sizes
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                 "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 32,
    "embedding_dropout": 0.0, "embedding_size": 64, "eos_token_id": 62, "flash_attention": False,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mask_token_id": 63, "max_sequence_length": 512, "mlp_hidden_size": 64,
    "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None, "n_heads": 4, "n_kv_heads": 4,
    "n_layers": 2, "pad_token_id": 61, "precision": "amp_bf16", "residual_dropout": 0.0, "rms_norm_eps": 1e-05,
    "rope": True, "rope_full_precision": True, "rope_theta": 10000.0, "scale_logits": False,
    "transformers_version": "4.46.3", "use_cache": False, "vocab_size": 64, "weight_tying": False,
}

DREAM_CONFIG = {  # the key set of Dream-org/Dream-v0-Instruct-7B's config.json, at tiny sizes
    "architectures": ["DreamModel"], "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
    "bos_token_id": 60, "eos_token_id": 62, "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02,
    "intermediate_size": 64, "mask_token_id": 63, "max_position_embeddings": 512, "max_window_layers": 28,
    "model_type": "Dream", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
    "pad_token_id": 61, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.46.2", "use_cache": True, "use_sliding_window": False, "vocab_size": 64,
}

LLADA_NAMES = {"model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight",
               "model.transformer.blocks.0.q_proj.weight", "model.transformer.blocks.0.k_proj.weight",
               "model.transformer.blocks.0.v_proj.weight", "model.transformer.blocks.0.attn_out.weight",
               "model.transformer.blocks.0.ff_proj.weight", "model.transformer.blocks.0.up_proj.weight",
               "model.transformer.blocks.0.ff_out.weight", "model.transformer.blocks.0.attn_norm.weight",
               "model.transformer.blocks.0.ff_norm.weight"}
DREAM_NAMES = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
               "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.bias",
               "model.layers.0.self_attn.k_proj.bias", "model.layers.0.self_attn.o_proj.weight",
               "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight",
               "model.layers.0.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight",
               "model.layers.0.post_attention_layernorm.weight"}


def write_published(tmp_path, family):
    be = tiny_backend(family, seed=5, dtype=torch.float32)
    sd = {k: v.contiguous() for k, v in be.model.state_dict().items()}
    names = LLADA_NAMES if family == "llada" else DREAM_NAMES
    assert names <= set(sd), names - set(sd)
    d = tmp_path / family
    d.mkdir()
    (d / "config.json").write_text(json.dumps(LLADA_CONFIG if family == "llada" else DREAM_CONFIG))
    half = len(sd) // 2  # sharded, with an index, as the hub checkpoints are
    keys = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    wm = {}
    for fn, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(d / fn), metadata={"format": "pt"})
        wm.update({k: fn for k in ks})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return be, d


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_published_layout_loads_through_public_loader(tmp_path, family):
    src, d = write_published(tmp_path, family)
    be = load_backend(str(d), dtype="float32")
    assert be.family == family and be.mask_id == 63 and be.eos_id == 62
    assert be.logit_shift == (1 if family == "dream" else 0)
    x = torch.randint(0, 60, (2, 12))
    torch.testing.assert_close(be.forward(x).logits, src.forward(x).logits)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_save_pretrained_round_trip(tmp_path, family):
    src = tiny_backend(family, seed=2, dtype=torch.float32)
    src.model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == ("llada" if family == "llada" else "Dream")
    if family == "llada":
        assert {"d_model", "n_layers", "n_heads", "mlp_hidden_size", "mask_token_id"} <= set(cfg)
    be = load_backend(str(tmp_path / "m"), dtype="float32")
    x = torch.randint(0, 60, (1, 9))
    torch.testing.assert_close(be.forward(x).logits, src.forward(x).logits)


def test_auto_classes_registered(tmp_path):
    from transformers import AutoConfig, AutoModel

    _, d = write_published(tmp_path, "llada")
    cfg = AutoConfig.from_pretrained(str(d))
    model = AutoModel.from_pretrained(str(d))
    assert type(cfg).__name__ == "LLaDAConfig" and type(model).__name__ == "LLaDAModelLM"


def test_missing_model_is_clear(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_backend(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_backend(str(tmp_path))


def test_corrupt_checkpoint_is_clear(tmp_path):
    _, d = write_published(tmp_path, "llada")
    for f in d.glob("*.safetensors"):
        f.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        load_backend(str(d))


def test_corrupt_config_and_unknown_family(tmp_path):
    _, d = write_published(tmp_path, "llada")
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_backend(str(d))
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="unsupported model_type"):
        load_backend(str(d))


def test_missing_weights(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(LLADA_CONFIG))
    with pytest.raises(ModelLoadError, match="no weights"):
        load_backend(str(d))


def test_hub_id_offline_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not be fetched"):
        load_backend("GSAI-ML/LLaDA-8B-Instruct-does-not-exist")
