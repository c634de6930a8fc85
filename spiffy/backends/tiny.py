"""Tiny random-weight models of each family, built in code, for tests and smoke runs."""
from __future__ import annotations

import torch

from .backend import DiffusionBackend
from .dream import DreamConfig, DreamModel
from .llada import LLaDAConfig, LLaDAModelLM

TINY_VOCAB = 64


def tiny_llada_config(vocab=TINY_VOCAB, **kw) -> LLaDAConfig:
    base = dict(d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=64, vocab_size=vocab,
                max_sequence_length=512, rope_theta=10000.0, mask_token_id=vocab - 1, eos_token_id=vocab - 2,
                pad_token_id=vocab - 3, bos_token_id=vocab - 4, eot_token_id=vocab - 5)
    base.update(kw)
    return LLaDAConfig(**base)


def tiny_dream_config(vocab=TINY_VOCAB, **kw) -> DreamConfig:
    base = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0, mask_token_id=vocab - 1,
                eos_token_id=vocab - 2, pad_token_id=vocab - 3, bos_token_id=vocab - 4, eot_token_id=vocab - 5)
    base.update(kw)
    return DreamConfig(**base)


def tiny_backend(family: str = "llada", seed: int = 0, dtype=torch.float64, device="cpu", **kw) -> DiffusionBackend:
    """A random-weight model of ``family`` ("llada" or "dream"). Weights are scaled up so the random
    model has peaked, varied distributions (otherwise every position would be near-uniform)."""
    torch.manual_seed(seed)
    if family == "llada":
        model = LLaDAModelLM(tiny_llada_config(**kw))
    elif family == "dream":
        model = DreamModel(tiny_dream_config(**kw))
    else:
        raise ValueError(f"unknown tiny family {family!r}")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    model = model.to(device=device, dtype=dtype).eval()
    tok = tiny_tokenizer(model.config.vocab_size) if model.config.vocab_size == TINY_VOCAB else None
    return DiffusionBackend(model, family, tok, name=f"tiny-{family}", logit_shift=1 if family == "dream" else 0)


TINY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 .,?!'\n-+=*/:()#"


def tiny_tokenizer(vocab=TINY_VOCAB):
    """A character-level fast tokenizer matching the tiny configs' special ids (mask = vocab-1, eos =
    vocab-2, pad = vocab-3, bos = vocab-4, end-of-turn = vocab-5); unknown characters map to '#'."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = TINY_CHARS[: vocab - 5]
    table = {c: i for i, c in enumerate(chars)}
    specials = {"<|eot|>": vocab - 5, "<|bos|>": vocab - 4, "<|pad|>": vocab - 3, "<|eos|>": vocab - 2,
                "<|mask|>": vocab - 1}
    table.update(specials)
    tk = Tokenizer(models.WordLevel(table, unk_token="#"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="#", eos_token="<|eos|>", pad_token="<|pad|>",
                                   bos_token="<|bos|>", mask_token="<|mask|>",
                                   additional_special_tokens=["<|eot|>"])
