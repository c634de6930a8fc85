"""A diffusion LM as a non-autoregressive drafter.

The drafter appends γ mask tokens after the current prefix and fills them in ``steps`` denoising
steps (default 1: every position at once from one forward). It returns the drafted tokens, the
distribution each token was drawn from (``q``, over the target's vocabulary, what speculative
sampling tests against) and a per-position confidence (used by draft trees).

Which masks are committed at each step: greedy drafting uses the most confident positions first;
sampled drafting always commits left to right, so that every token is drawn from a distribution that
conditions only on the prefix and on tokens to its left — the condition under which speculative
sampling against the recorded ``q`` is exact.

Prefix cache (``cache="prefix"``, the default): the keys/values of the committed prefix are computed
once (a forward over the prefix alone) and reused as a frozen context; each round then runs only the
uncached tail plus the masks. The context is refreshed once ``refresh`` committed tokens have
accumulated past it. Like Fast-dLLM's prefix cache this approximates the bidirectional model (cached
prefix keys do not see later tokens) — it changes drafts, never the verified output.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import ConfigError
from .vocab import allowed_ids, to_target_vocab


@dataclass
class Draft:
    tokens: list            # drafted token ids (γ of them)
    q: torch.Tensor         # [γ, V_target] distribution each token was drawn from (drafter's float dtype)
    conf: torch.Tensor      # [γ] probability of the drafted token when it was committed
    key: Optional[object] = None   # how trustworthy the draft is, for the cost gate (None: always verified)


class DLLMDrafter:
    """Draft with a :class:`spiffy.DiffusionBackend` (LLaDA or Dream; ``logit_shift`` respected)."""

    kind = "dllm"

    def __init__(self, backend, target_vocab: int, steps: int = 1, temperature: float = 0.0,
                 banned=(), cache: str = "prefix", refresh: int = 32, extra_masks: int = 0):
        if getattr(backend, "mask_id", None) is None:
            raise ConfigError(f"{getattr(backend, 'name', 'drafter')}: a diffusion drafter needs a mask token id")
        if steps < 1:
            raise ConfigError(f"drafter steps must be >= 1 (got {steps})")
        self.backend = backend
        self.target_vocab = int(target_vocab)
        self.steps = int(steps)
        self.temperature = float(temperature)
        self.allowed = allowed_ids(backend.vocab_size, target_vocab, (backend.mask_id, *banned), backend.device)
        if cache not in ("none", "prefix"):
            raise ConfigError(f"drafter cache must be 'none' or 'prefix' (got {cache!r})")
        self.cache = cache
        # masks appended after the γ drafted slots (never committed): a dLLM trained on long answers
        # otherwise reads "the answer ends after γ tokens" and drifts towards EOS
        self.extra_masks = max(0, int(extra_masks))
        self.refresh = max(1, int(refresh))
        self.ctx = None            # ContextKV of self.ctx_tokens
        self.ctx_tokens: list = []
        self.calls = 0
        self.seconds = 0.0

    @property
    def name(self):
        return self.backend.name

    def reset(self):
        self.ctx, self.ctx_tokens = None, []

    def _forward(self, *a, **kw):
        t0 = time.perf_counter()
        out = self.backend.forward(*a, **kw)
        self.calls += 1
        self.seconds += time.perf_counter() - t0
        return out

    def _refresh(self, prefix: list):
        """Recompute the frozen context over prefix[:-1] when enough new tokens have been committed."""
        from ..backends.core import ContextKV

        keep = len(prefix) - 1
        if keep < 1 or (self.ctx is not None and self.ctx_tokens == prefix[: len(self.ctx_tokens)]
                        and keep - len(self.ctx_tokens) < self.refresh):
            return
        dev = self.backend.device
        x = torch.tensor([prefix[:keep]], dtype=torch.long, device=dev)
        pos = torch.arange(keep, device=dev)
        out = self._forward(x, position_ids=pos[None], return_kv=True,
                            logits_index=torch.zeros(1, 1, dtype=torch.long, device=dev))
        self.ctx = ContextKV([(k, v) for k, v in out.kv], torch.ones(1, keep, dtype=torch.bool, device=dev), pos)
        self.ctx_tokens = list(prefix[:keep])
    @torch.no_grad()
    def draft_batch(self, prefixes: list, gammas: list, generator: Optional[torch.Generator] = None,
                    sample: bool = False) -> list:
        """Draft ``gammas[b]`` tokens after each ``prefixes[b]`` in one batched pass per denoising step."""
        if any(g < 1 for g in gammas):
            raise ConfigError(f"draft length must be >= 1 (got {min(gammas)})")
        if any(len(p) == 0 for p in prefixes):
            raise ConfigError("cannot draft after an empty prefix")
        be = self.backend
        dev = be.device
        B = len(prefixes)
        prefixes = [list(p) for p in prefixes]
        # the cached context, when every row extends it (and keeps >= 1 uncached token)
        lc, ctx = 0, None
        if self.ctx is not None:
            n = len(self.ctx_tokens)
            if all(len(p) > n and p[:n] == self.ctx_tokens for p in prefixes):
                lc, ctx = n, self.ctx.repeat(B)
        E = self.extra_masks
        lens = [len(p) - lc + g + E for p, g in zip(prefixes, gammas)]
        L, G = max(lens), max(gammas)
        x = torch.full((B, L), be.pad_id, dtype=torch.long, device=dev)
        valid = torch.zeros(B, L, dtype=torch.bool, device=dev)
        pos = torch.zeros(B, G, dtype=torch.long, device=dev)       # query row of each draft slot
        slot_ok = torch.zeros(B, G, dtype=torch.bool, device=dev)
        for b, (p, g) in enumerate(zip(prefixes, gammas)):
            tail = p[lc:]
            x[b, : len(tail)] = torch.tensor(tail, dtype=torch.long, device=dev)
            x[b, len(tail): len(tail) + g + E] = be.mask_id
            valid[b, : len(tail) + g + E] = True
            pos[b, :g] = torch.arange(len(tail), len(tail) + g, device=dev)
            slot_ok[b, :g] = True
        qpos = (lc + torch.arange(L, device=dev))[None].expand(B, -1)
        rows = (pos - be.logit_shift).clamp(min=0)
        q = torch.zeros(B, G, self.target_vocab, dtype=torch.float32, device=dev)
        conf = torch.zeros(B, G, dtype=torch.float32, device=dev)
        tokens = torch.full((B, G), -1, dtype=torch.long, device=dev)
        pending = slot_ok.clone()
        left_to_right = sample
        for s in range(self.steps):
            out = self._forward(x, position_ids=qpos, context=ctx, logits_index=rows, key_valid=valid)
            logits = out.logits
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            logits = logits.masked_fill(~self.allowed, float("-inf"))
            if sample and self.temperature > 0:
                probs = torch.softmax(logits / self.temperature, dim=-1)
            else:
                probs = torch.softmax(logits, dim=-1)
            if sample:
                flat = probs.reshape(-1, probs.shape[-1])
                choice = torch.multinomial(flat, 1, generator=generator).view(B, G)
            else:
                choice = probs.argmax(-1)
            cprob = probs.gather(-1, choice[..., None])[..., 0]
            if self.steps == 1:   # one step: every slot is committed from this forward
                tokens, conf, q = choice, cprob, to_target_vocab(probs, self.target_vocab)
                break
            # how many slots each row commits this step
            commit = torch.zeros(B, G, dtype=torch.bool, device=dev)
            for b in range(B):
                left = int(pending[b].sum())
                if left == 0:
                    continue
                k = -(-left // (self.steps - s))  # ceil: the rest is spread evenly over the steps left
                idx = pending[b].nonzero()[:, 0]
                if left_to_right:
                    sel = idx[:k]
                else:
                    sel = idx[cprob[b, idx].argsort(descending=True, stable=True)[:k]]
                commit[b, sel] = True
            if s == 0:
                q, conf = q.to(probs.dtype), conf.to(probs.dtype)
            tokens = torch.where(commit, choice, tokens)
            conf = torch.where(commit, cprob, conf)
            q = torch.where(commit[..., None], to_target_vocab(probs, self.target_vocab), q)
            pending &= ~commit
            for b in range(B):
                sel = commit[b].nonzero()[:, 0]
                x[b, pos[b, sel]] = choice[b, sel]
            if not bool(pending.any()):
                break
        res = []
        for b, g in enumerate(gammas):
            res.append(Draft(tokens[b, :g].tolist(), q[b, :g], conf[b, :g]))
        return res

    def draft(self, prefix, gamma: int, generator=None, sample: bool = False) -> Draft:
        """Draft after the committed ``prefix`` (refreshing the prefix cache when it is on)."""
        if self.cache == "prefix":
            self._refresh(list(prefix))
        return self.draft_batch([list(prefix)], [gamma], generator, sample)[0]
