"""The small interface samplers use: a model plus the facts about its vocabulary and context."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..errors import ConfigError


def _first_id(v):
    if isinstance(v, (list, tuple)):
        return v[0] if v else None
    return v


@dataclass
class DiffusionBackend:
    """A masked-diffusion LM ready for decoding.

    ``forward`` runs the model over query tokens (optionally with explicit position ids, a 2-D
    padding mask or a 4-D boolean mask over context + query keys, and a frozen KV context) and
    returns logits only at the requested query rows. ``logit_shift`` is 1 for families whose
    logit at position i-1 predicts token i (Dream) and 0 otherwise (LLaDA).
    """

    model: torch.nn.Module
    family: str
    tokenizer: object = None
    name: str = "model"
    logit_shift: int = 0
    mask_id: int = field(init=False)
    eos_id: Optional[int] = field(init=False)
    eot_id: Optional[int] = field(init=False)
    pad_id: Optional[int] = field(init=False)
    vocab_size: int = field(init=False)
    context_length: int = field(init=False)
    compiled: Optional[str] = field(default=None, init=False)   # torch.compile mode in use, None = eager
    _call: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        cfg = self.model.config
        tok = self.tokenizer
        mask = getattr(cfg, "mask_token_id", None)
        if mask is None and tok is not None:
            mask = getattr(tok, "mask_token_id", None)
        if mask is None:
            raise ConfigError(
                f"{self.name}: no mask token id: neither config.mask_token_id nor the tokenizer's mask token is set")
        self.mask_id = int(mask)
        self.eos_id = _first_id(getattr(cfg, "eos_token_id", None))
        if self.eos_id is None and tok is not None:
            self.eos_id = tok.eos_token_id
        self.eot_id = getattr(cfg, "eot_token_id", None)
        if self.eot_id is None and tok is not None:
            for name in ("<|eot_id|>", "<|im_end|>", "<|end|>"):
                tid = tok.convert_tokens_to_ids(name) if name in tok.get_vocab() else None
                if tid is not None:
                    self.eot_id = tid
                    break
        self.pad_id = _first_id(getattr(cfg, "pad_token_id", None))
        if self.pad_id is None:
            self.pad_id = self.eos_id if self.eos_id is not None else self.mask_id
        self.vocab_size = int(self.model.get_input_embeddings().weight.shape[0])
        if not 0 <= self.mask_id < self.vocab_size:
            raise ConfigError(f"{self.name}: mask id {self.mask_id} is outside the vocabulary (size {self.vocab_size})")
        self.context_length = int(getattr(cfg, "max_position_embeddings", None) or 4096)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def compile(self, mode: Optional[str] = None, fullgraph: bool = True) -> "DiffusionBackend":
        """Run every forward through ``torch.compile`` (one graph per input shape, ``dynamic=False``; CUDA:
        ``mode="reduce-overhead"``, i.e. CUDA graphs, unless ``mode`` says otherwise). ``fullgraph``: a graph
        break (a host sync or Python fallback inside the forward) is an error, not a silent slowdown.
        Compiled kernels round differently from eager ones, so compare a compiled Spiffy with a compiled
        baseline: at the same static shape (``SpeculativeConfig(static=True)``) both run the same graph."""
        if mode is None:
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
        from ..devices import compile_static

        self._call = compile_static(self.model, mode, fullgraph)
        self.compiled = mode
        return self

    @torch.no_grad()
    def forward(self, input_ids, position_ids=None, attention_mask=None, context=None, return_kv=False,
                logits_index=None, key_valid=None):
        """``key_valid`` [B, L] marks real (non-padding) query tokens; ``attention_mask`` may be that 2-D
        mask or a 4-D boolean mask over (context + query) keys."""
        fwd = self.model if self._call is None else self._call
        return fwd(input_ids, position_ids=position_ids, attention_mask=attention_mask, context=context,
                   return_kv=return_kv, logits_index=logits_index, key_valid=key_valid)

    def encode_prompt(self, text: str, chat: bool = True) -> list[int]:
        if self.tokenizer is None:
            raise ConfigError(f"{self.name} has no tokenizer: pass token ids instead of text")
        tok = self.tokenizer
        if chat and getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                          tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return list(ids)
        return tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        if self.tokenizer is None:
            return ""
        stops = {t for t in (self.eos_id, self.eot_id) if t is not None}
        out = []
        for t in ids:
            if t in stops:
                break
            out.append(int(t))
        return self.tokenizer.decode(out, skip_special_tokens=True)
