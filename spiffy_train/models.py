"""Model construction from a recipe and checkpoint saving (safetensors, bf16/fp16)."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from spiffy.backends.llada import LLaDAConfig, LLaDAModelLM
from .tokenizer import special_ids

SAVE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def build_model(kind: str, model_cfg: dict, tok):
    ids = special_ids(tok)
    vocab = len(tok)
    if kind == "dllm":
        cfg = LLaDAConfig(vocab_size=vocab, mask_token_id=ids["mask"], eos_token_id=ids["eos"],
                          pad_token_id=ids["pad"], bos_token_id=ids["bos"], eot_token_id=ids["eot"],
                          **model_cfg)
        return LLaDAModelLM(cfg)
    if kind == "ar":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=vocab, bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                          pad_token_id=ids["pad"], **model_cfg)
        return LlamaForCausalLM(cfg)
    raise ValueError(f"unknown model kind {kind!r} (dllm or ar)")


def count_params(model) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def save_checkpoint(model, tok, out_dir, save_dtype: str = "bf16"):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(model).to("cpu", SAVE_DTYPES[save_dtype])
    if getattr(m, "generation_config", None) is not None:
        m.generation_config.pad_token_id = tok.pad_token_id
        m.generation_config.eos_token_id = tok.eos_token_id
    m.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    del m


def load_for_training(kind: str, path):
    """A saved reference checkpoint in float32, ready to train further."""
    if kind == "dllm":
        return LLaDAModelLM.from_pretrained(str(path), dtype=torch.float32)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
