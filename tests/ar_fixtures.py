"""Tiny models for tests and smoke runs of AR-verifier mode.

``tiny_target``: a random-weight ``LlamaForCausalLM`` over the tiny char tokenizer's vocabulary.
``oracle_drafter``: a diffusion-style backend built on a causal LM that fills masks with that LM's
greedy continuation plus seeded logit noise — a drafter that agrees with the target often but not
always, so tests exercise partial acceptance (random tiny dLLMs almost never agree with a target).
It ignores a KV context: use it with ``DLLMDrafter(..., cache="none")``.
"""
from __future__ import annotations

import torch
from torch import nn


def tiny_target(vocab: int = 64, seed: int = 1, dtype=torch.float64, scale: float = 3.0, layers: int = 2,
                tokenizer="tiny", stop_ids="default"):
    from transformers import LlamaConfig, LlamaForCausalLM

    from spiffy.backends.tiny import tiny_tokenizer
    from spiffy.ar.target import ARTarget

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=vocab - 2, pad_token_id=vocab - 3, bos_token_id=vocab - 4)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    model = model.to(dtype).eval()
    model.generation_config.eos_token_id = vocab - 2
    model.generation_config.pad_token_id = vocab - 3
    tok = (tiny_tokenizer(vocab) if vocab == 64 else None) if tokenizer == "tiny" else tokenizer
    stops = [vocab - 2] if stop_ids == "default" else list(stop_ids)
    return ARTarget(model, tok, name=f"tiny-llama-{seed}", stop_ids=stops)


class _OracleConfig:
    def __init__(self, vocab, mask_id, eos_id):
        self.vocab_size = vocab
        self.mask_token_id = mask_id
        self.eos_token_id = eos_id
        self.pad_token_id = eos_id
        self.max_position_embeddings = 512


class OracleDLLM(nn.Module):
    """Masks are filled left to right with a causal LM's argmax; logits get seeded noise of size ``noise``."""

    def __init__(self, lm, mask_id: int, eos_id: int, noise: float = 1.0, seed: int = 0):
        super().__init__()
        self.lm = lm
        self.noise = noise
        self.seed = seed
        self.mask_id = mask_id
        self.config = _OracleConfig(lm.config.vocab_size, mask_id, eos_id)

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    @torch.no_grad()
    def forward(self, input_ids, position_ids=None, attention_mask=None, context=None, return_kv=False,
                logits_index=None, key_valid=None, **_):
        from spiffy.backends.core import DiffusionLMOutput

        B, L = input_ids.shape
        V = self.config.vocab_size
        out = torch.zeros(B, L, V, dtype=next(self.lm.parameters()).dtype)
        for b in range(B):
            row = input_ids[b].tolist()
            n = len(row) if key_valid is None else int(key_valid[b].sum())
            first = next((i for i in range(n) if row[i] == self.mask_id), n)
            seq = row[:first]
            for i in range(first, n):
                lg = self.lm(torch.tensor([seq])).logits[0, -1].clone()
                g = torch.Generator().manual_seed(hash((self.seed, tuple(seq[-3:]), i)) % (2 ** 31))
                lg = lg + self.noise * torch.randn(lg.shape, generator=g, dtype=lg.dtype) * lg.std()
                lg[self.mask_id] = float("-inf")
                out[b, i] = lg
                seq.append(row[i] if row[i] != self.mask_id else int(lg.argmax()))
        if logits_index is not None:
            if logits_index.dim() == 1:
                logits_index = logits_index[None].expand(B, -1)
            out = torch.gather(out, 1, logits_index[..., None].expand(-1, -1, V))
        return DiffusionLMOutput(logits=out)


def oracle_drafter(target, noise: float = 1.0, seed: int = 0):
    """A DiffusionBackend (LLaDA-style, no logit shift) that approximately follows ``target``."""
    from spiffy.backends.backend import DiffusionBackend

    V = target.vocab_size
    m = OracleDLLM(target.model, mask_id=V - 1, eos_id=target.stop_ids[0], noise=noise, seed=seed)
    return DiffusionBackend(m, "oracle", target.tokenizer, name="oracle-dllm", logit_shift=0)
