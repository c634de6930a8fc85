"""A diffusion LM as a non-autoregressive drafter.

The drafter appends γ mask tokens after the current prefix and fills them in ``steps`` denoising
steps (default 1: every position at once from one forward). It returns the drafted tokens, the
distribution each token was drawn from (``q``, over the target's vocabulary, what speculative
sampling tests against) and a per-position confidence (used by draft trees).

Each denoising step is the engine's own (``spiffy.sampling.step.denoise_step`` with its noise keyed by
(seed, prefix length, step)): greedy drafting commits the most confident positions first; sampled
drafting commits left to right (``remasking="left_to_right"``), so that every token is drawn from a
distribution that conditions only on the prefix and on tokens to its left — the condition under which
speculative sampling against the recorded ``q`` is exact.

Prefix cache (``cache="prefix"``, the default): the keys/values of the committed prefix are computed
once (a forward over the prefix alone) and reused as a frozen context; each round then runs only the
uncached tail plus the masks. The context is refreshed once ``refresh`` committed tokens have
accumulated past it. Like Fast-dLLM's prefix cache this approximates the bidirectional model (cached
prefix keys do not see later tokens) — it changes drafts, never the verified output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..devices import to_device
from ..errors import ConfigError
from ..sampling.config import GenerationConfig
from ..sampling.noise import step_generator
from ..sampling.schedule import even_schedule
from ..sampling.step import denoise_step
from ..timing import ForwardClock
from .vocab import allowed_ids, to_target_vocab


@dataclass
class Draft:
    ids: object             # drafted token ids (γ of them): a list, or a tensor on the drafter's device, read
                            # back when `tokens` is first asked for (a greedy chain is verified before that)
    q: torch.Tensor         # [γ, V_target] distribution each token was drawn from (drafter's float dtype)
    conf: torch.Tensor      # [γ] probability of the drafted token when it was committed
    key: Optional[object] = None   # how trustworthy the draft is, for the cost gate (None: always verified)

    @property
    def tokens(self) -> list:
        if isinstance(self.ids, torch.Tensor):
            self.ids = self.ids.tolist()
        return self.ids


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
        self.clock = ForwardClock(backend.device)

    @property
    def seconds(self) -> float:
        """Seconds inside forwards so far (CUDA events on a GPU, read here)."""
        return self.clock.total()

    @property
    def name(self):
        return self.backend.name

    def reset(self):
        self.ctx, self.ctx_tokens = None, []

    def _forward(self, *a, **kw):
        t0 = self.clock.start()
        out = self.backend.forward(*a, **kw)
        self.calls += 1
        self.clock.stop(t0)
        return out

    def _refresh(self, prefix: list):
        """Recompute the frozen context over prefix[:-1] when enough new tokens have been committed."""
        from ..backends.core import ContextKV

        keep = len(prefix) - 1
        if keep < 1 or (self.ctx is not None and self.ctx_tokens == prefix[: len(self.ctx_tokens)]
                        and keep - len(self.ctx_tokens) < self.refresh):
            return
        dev = self.backend.device
        x = to_device(torch.tensor([prefix[:keep]], dtype=torch.long), dev)
        pos = torch.arange(keep, device=dev)
        out = self._forward(x, position_ids=pos[None], return_kv=True,
                            logits_index=torch.zeros(1, 1, dtype=torch.long, device=dev))
        self.ctx = ContextKV([(k, v) for k, v in out.kv], torch.ones(1, keep, dtype=torch.bool, device=dev), pos)
        self.ctx_tokens = list(prefix[:keep])
    def _rule(self, sample: bool) -> GenerationConfig:
        """The engine's step rule for drafting: greedy drafts commit the most confident slots first;
        sampled drafts commit left to right, so every token is drawn from a distribution that conditions
        only on the prefix and on tokens to its left, the condition under which speculative sampling
        against the recorded ``q`` is exact."""
        return GenerationConfig(gen_length=1, block_length=1, temperature=self.temperature if sample else 0.0,
                                remasking="left_to_right" if sample else "low_confidence")

    @torch.no_grad()
    def draft_batch(self, prefixes: list, gammas: list, seed: int = 0, sample: bool = False) -> list:
        """Draft ``gammas[b]`` tokens after each ``prefixes[b]`` in one batched pass per denoising step. Each
        step is the engine's own (:func:`spiffy.sampling.step.denoise_step`, the LLaDA rule, LLaDA's even
        split of the slots over the steps) with its noise keyed by (seed, len(prefixes[0]), step)."""
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
        block = torch.full((B, G), be.pad_id, dtype=torch.long, device=dev)   # slot states (pad: no slot)
        for b, (p, g) in enumerate(zip(prefixes, gammas)):
            tail = p[lc:]
            x[b, : len(tail)] = to_device(torch.tensor(tail, dtype=torch.long), dev)
            x[b, len(tail): len(tail) + g + E] = be.mask_id
            valid[b, : len(tail) + g + E] = True
            pos[b, :g] = torch.arange(len(tail), len(tail) + g, device=dev)
            block[b, :g] = be.mask_id
        qpos = (lc + torch.arange(L, device=dev))[None].expand(B, -1)
        rows = (pos - be.logit_shift).clamp(min=0)
        rule = self._rule(sample)
        split = [even_schedule(g, self.steps) for g in gammas]
        q = conf = None
        for s in range(self.steps):
            out = self._forward(x, position_ids=qpos, context=ctx, logits_index=rows, key_valid=valid)
            qdt = out.logits.dtype if out.logits.dtype in (torch.float32, torch.float64) else torch.float32
            logits = out.logits.to(torch.float64).masked_fill(~self.allowed, float("-inf"))
            st = denoise_step(logits, block, be.mask_id, rule, "llada", [c[s] for c in split],
                              step_generator(seed, len(prefixes[0]), s, dev))
            # q: the distribution each token was drawn from (Gumbel-max over logits / T is a draw from it)
            probs = torch.softmax(logits / rule.temperature if rule.temperature > 0 else logits, dim=-1)
            qs = to_target_vocab(probs, self.target_vocab)
            c = st.committed
            q = qs if q is None else torch.where(c[..., None], qs, q)
            conf = st.confidence if conf is None else torch.where(c, st.confidence, conf)
            block = st.tokens
            x.scatter_(1, pos, torch.where(block == be.pad_id, x.gather(1, pos), block))
            if s + 1 < self.steps and not bool((block == be.mask_id).any()):   # a read: only where it can stop early
                break
        q, conf = q.to(qdt), conf.to(qdt)
        return [Draft(block[b, :g], q[b, :g], conf[b, :g]) for b, g in enumerate(gammas)]

    def draft(self, prefix, gamma: int, seed: int = 0, sample: bool = False) -> Draft:
        """Draft after the committed ``prefix`` (refreshing the prefix cache when it is on)."""
        if self.cache == "prefix":
            self._refresh(list(prefix))
        return self.draft_batch([list(prefix)], [gamma], seed, sample)[0]
