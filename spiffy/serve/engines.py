"""What the server decodes with: a dLLM (baseline or Spiffy) or an AR target with a drafter.

An engine turns a request into a :class:`Plan` (prompt ids and the exact decoding settings, checked
against the server's limits) and decodes a batch of plans. A request's tokens are what the offline
API gives for the same prompt and settings (``Plan.offline`` says which call); requests batch
together only when their settings are equal (``Plan.key``), and a batched row decodes exactly as it
would alone (the engine's batch guarantee, see spiffy.sampling.noise).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from ..errors import SpiffyError
from .protocol import ApiError


@dataclass
class ServeLimits:
    max_tokens: int = 512            # a request may ask for at most this many tokens
    default_max_tokens: int = 128    # when it asks for none
    max_budget: int = 16             # largest Spiffy budget D a request may ask for
    max_draft_length: int = 32       # largest AR draft length


@dataclass
class Plan:
    prompt_ids: list
    max_tokens: int
    settings: dict                   # the exact decoding settings, echoed in the response
    key: str                         # plans with equal keys may share a batch
    payload: object = None           # engine-specific (config objects)
    stops: list = field(default_factory=list)


@dataclass
class Outcome:
    token_ids: list                  # generated tokens, cut to the request's max_tokens
    model_calls: int                 # NFE (dLLM, shared by the batch) or target calls (AR)
    accepted_per_round: Optional[float] = None
    batch_size: int = 1


def _context_error(n_prompt: int, n_new: int, limit: int) -> ApiError:
    return ApiError(413, f"the prompt has {n_prompt} tokens and {n_new} more were asked for: {n_prompt + n_new} is over "
                         f"the model's context of {limit} tokens", param="messages", code="context_length_exceeded")


def _max_tokens(req, limits: ServeLimits) -> int:
    n = req.wanted_tokens() or limits.default_max_tokens
    if n > limits.max_tokens:
        raise ApiError(422, f"max_tokens {n} is over this server's limit of {limits.max_tokens}", param="max_tokens",
                       code="max_tokens_over_limit")
    return n


def chat_ids(tokenizer, encode_prompt: Callable, messages) -> list:
    """One user message is encoded exactly as the offline API encodes a text prompt; a conversation
    goes through the tokenizer's chat template."""
    if len(messages) == 1 and messages[0].role == "user":
        return encode_prompt(messages[0].text(), True)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ApiError(422, "this model has no chat template: send a single user message or use /v1/completions",
                       param="messages")
    ids = tokenizer.apply_chat_template([{"role": m.role if m.role != "developer" else "system", "content": m.text()}
                                         for m in messages], add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


class DLLMEngine:
    """A diffusion LM: the baseline sampler, or Spiffy when the request's budget is positive."""
    kind = "dllm"
    batchable = True

    def __init__(self, backend, base, budget: int = 0, limits: Optional[ServeLimits] = None, name: Optional[str] = None):
        self.backend, self.base, self.budget = backend, base, budget
        self.limits = limits or ServeLimits()
        self.name = name or backend.name

    def encode(self, req) -> list:
        if hasattr(req, "messages"):
            return chat_ids(self.backend.tokenizer, self.backend.encode_prompt, req.messages)
        if isinstance(req.prompt, list):
            return list(req.prompt)
        return self.backend.encode_prompt(req.prompt, not (True if req.spiffy.raw is None else req.spiffy.raw))

    def plan(self, req, ids: list) -> Plan:
        from ..sampling.config import GenerationConfig
        from ..speculative.config import SpeculativeConfig

        o = req.spiffy
        n = _max_tokens(req, self.limits)
        bl = o.block_length or self.base.block_length
        gen = math.ceil(n / bl) * bl
        if len(ids) + gen > self.backend.context_length:
            raise _context_error(len(ids), gen, self.backend.context_length)
        threshold = o.threshold if o.threshold is not None else (None if o.tokens_per_step else self.base.threshold)
        k = None if threshold is not None else (o.tokens_per_step or self.base.tokens_per_step)
        fields = dict(self.base.to_dict(), gen_length=gen, block_length=bl, steps=None, tokens_per_step=k,
                      threshold=threshold, cache=o.cache or self.base.cache,
                      temperature=self.base.temperature if req.temperature is None else req.temperature,
                      top_p=req.top_p if req.top_p not in (None, 1.0) else self.base.top_p,
                      seed=self.base.seed if req.seed is None else req.seed)
        budget = self.budget if o.budget is None else o.budget
        if budget > self.limits.max_budget:
            raise ApiError(422, f"spiffy.budget {budget} is over this server's limit of {self.limits.max_budget}",
                           param="spiffy.budget")
        try:
            cfg = GenerationConfig(**fields).validate(len(ids), self.backend.context_length)
            spec = SpeculativeConfig(budget=budget, verify=o.verify or "batch") if budget > 0 else None
            if spec is not None:
                spec.validate()
        except SpiffyError as e:
            raise ApiError(422, str(e), param="spiffy") from None
        settings = {"generation": cfg.to_dict(), "spiffy_budget": budget,
                    "verify": spec.verify if spec is not None else None}
        return Plan(ids, n, settings, json.dumps(settings, sort_keys=True), (cfg, spec), req.stops())

    def decode_text(self, ids) -> str:
        return self.backend.decode(ids)

    def stop_ids(self) -> set:
        return {t for t in (self.backend.eos_id, self.backend.eot_id) if t is not None}

    def run(self, plans: list, on_tokens: Callable[[int, list], None]) -> list:
        """Decode ``plans`` (equal keys) as one batch; ``on_tokens(i, new)`` streams row i's final blocks."""
        from ..sampling.baseline import generate_baseline
        from ..speculative import generate_speculative

        cfg, spec = plans[0].payload
        prompts = [p.prompt_ids for p in plans]

        def on_block(b, rows):
            for i, row in enumerate(rows):
                on_tokens(i, row)

        if spec is None:
            res = generate_baseline(self.backend, prompts, cfg, on_block=on_block)
        else:
            res = generate_speculative(self.backend, prompts, cfg, spec, on_block=on_block)
        acc = None
        if res.stats is not None and getattr(res.stats, "rounds", 0):
            acc = res.stats.accepted / res.stats.rounds
        return [Outcome(res.token_ids[i][:p.max_tokens], res.nfe, acc, len(plans)) for i, p in enumerate(plans)]


STRATEGIES = ("plain", "chain", "tree", "adaptive", "path")


class AREngine:
    """An autoregressive target accelerated by a drafter (spiffy.ar). One request decodes at a time."""
    kind = "ar"
    batchable = False

    def __init__(self, target, drafter_model, base, strategy: str = "chain", limits: Optional[ServeLimits] = None,
                 name: Optional[str] = None):
        """``drafter_model``: what :func:`spiffy.ar.pair.load_drafter_model` returns (or None); it is
        wrapped per request with the request's temperature, as `spiffy sample --target` does."""
        self.target, self.drafter, self.base, self.strategy = target, drafter_model, base, strategy
        self.limits = limits or ServeLimits()
        self._drafters: dict = {}
        self.name = name or target.name
        self.context_length = int(getattr(target.model.config, "max_position_embeddings", 0) or 1 << 30)

    def encode(self, req) -> list:
        if hasattr(req, "messages"):
            return chat_ids(self.target.tokenizer, self.target.encode_prompt, req.messages)
        if isinstance(req.prompt, list):
            return list(req.prompt)
        return self.target.encode_prompt(req.prompt, not (True if req.spiffy.raw is None else req.spiffy.raw))

    def plan(self, req, ids: list) -> Plan:
        o = req.spiffy
        n = _max_tokens(req, self.limits)
        if len(ids) + n > self.context_length:
            raise _context_error(len(ids), n, self.context_length)
        if req.top_p not in (None, 1.0):
            raise ApiError(422, "top_p is not supported with an AR target (exact speculative sampling of the full "
                                "distribution)", param="top_p")
        for name in ("budget", "cache", "threshold", "tokens_per_step", "block_length", "verify"):
            if getattr(o, name) is not None:
                raise ApiError(422, f"spiffy.{name} applies to a diffusion model; this server runs an AR target",
                               param=f"spiffy.{name}")
        strategy = o.strategy or self.strategy
        if self.drafter is None and strategy != "plain":
            raise ApiError(422, f"spiffy.strategy {strategy!r} needs a drafter; this server has none", param="spiffy.strategy")
        d = o.draft_length or self.base.draft_length
        if d > self.limits.max_draft_length:
            raise ApiError(422, f"spiffy.draft_length {d} is over this server's limit of {self.limits.max_draft_length}",
                           param="spiffy.draft_length")
        try:
            cfg = replace(self.base, max_new_tokens=n, draft_length=d,
                          temperature=self.base.temperature if req.temperature is None else req.temperature,
                          seed=self.base.seed if req.seed is None else req.seed,
                          tree=(self.base.tree or 4) if strategy == "tree" else 0, adaptive=strategy == "adaptive",
                          path_search=strategy == "path").check()
        except SpiffyError as e:
            raise ApiError(422, str(e), param="spiffy") from None
        settings = {"ar": cfg.to_dict(), "strategy": strategy}
        return Plan(ids, n, settings, json.dumps(settings, sort_keys=True), (cfg, strategy), req.stops())

    def decode_text(self, ids) -> str:
        return self.target.decode(ids)

    def stop_ids(self) -> set:
        return set(self.target.stop_ids)

    def drafter_for(self, cfg):
        from ..ar.pair import make_drafter

        key = (cfg.drafter_steps, cfg.temperature)
        if key not in self._drafters:
            self._drafters[key] = make_drafter(self.drafter, self.target, steps=cfg.drafter_steps,
                                               temperature=cfg.temperature)
        return self._drafters[key]

    def run(self, plans: list, on_tokens: Callable[[int, list], None]) -> list:
        from ..ar.decode import generate_ar

        out = []
        for i, p in enumerate(plans):
            cfg, strategy = p.payload
            res = generate_ar(self.target, None if strategy == "plain" else self.drafter_for(cfg), p.prompt_ids, cfg,
                              on_tokens=lambda new, i=i: on_tokens(i, new))
            acc = (sum(res.accepted) / len(res.accepted)) if res.accepted else None
            out.append(Outcome(res.token_ids, res.target_calls, acc, 1))
        return out
