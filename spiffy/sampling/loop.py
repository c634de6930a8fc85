"""The one block loop every dLLM decode runs: baseline, Spiffy and trace replay.

Blocks are decoded left to right. Inside block ``b`` the loop owns the commit schedule, the step
(``StepRule``: the baseline's transition with its noise keyed by (seed, b, t)), the end-of-block test
and early stopping. Where each step's distribution comes from is pluggable (a *source*):

- the baseline's source runs the model on the current state (:class:`spiffy.sampling.baseline.ModelSource`);
- Spiffy's source verifies drafts with each call and hands out a verified draft's distribution when
  the step lands on it (:class:`spiffy.speculative.decoder.SpeculativeSource`);
- a replay's source reads a recorded trace and only counts the calls Spiffy would make
  (:mod:`spiffy.speculative.replay`).

Because every decoder steps with the same rule and the same keys in this same loop, an output is the
baseline's whenever each distribution handed to the step is the one the baseline computes for that
state: that is the whole lossless argument.

A source implements ``first(b, block) -> dist`` (the distribution of the block's first state) and
``next(b, t, schedule, before, after, dist) -> dist`` (the distribution of ``after`` [B, n], the state step
``t - 1`` reached from ``before`` with ``dist``). ``dist`` is what the step rule reads: logits [B, n, V] or
a list of per-row logits [n, V]; or a :class:`Planned` outcome, when the source has already applied this
same rule to the distribution (Spiffy's acceptance walk does, on the device, for every step of a round).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ..devices import compile_static
from .config import GenerationConfig
from .noise import step_generator
from .schedule import block_schedule
from .step import StepOutcome, denoise_step


def sampler_of(backend, cfg: GenerationConfig) -> str:
    return cfg.sampler or ("dream" if backend.family == "dream" else "llada")


class Canvas:
    """The sequence being decoded: [B, P + gen_length] ids, left-padded prompts, blocks after them."""

    def __init__(self, x: torch.Tensor, P: int, cfg: GenerationConfig, mask_id: int, eos_id=None, eot_id=None,
                 pad_id: int = 0):
        self.x, self.P, self.cfg = x, P, cfg
        self.B, self.L = x.shape
        self.mask_id, self.eos_id, self.eot_id, self.pad_id = mask_id, eos_id, eot_id, pad_id

    def span(self, b: int) -> tuple[int, int]:
        s = self.P + b * self.cfg.block_length
        return s, s + self.cfg.block_length

    def commit(self, b: int, block: torch.Tensor) -> None:
        s, e = self.span(b)
        self.x[:, s:e] = block

    def generated(self) -> torch.Tensor:
        return self.x[:, self.P:]

    def stopped(self, b: int) -> bool:
        """After block b: has every row committed an EOS / end-of-turn? (Blocks are decoded left to
        right, so everything before it is unmasked.)"""
        _, e = self.span(b)
        done = self.x[:, self.P:e]
        hit = torch.zeros(self.B, dtype=torch.bool, device=done.device)
        for t in (self.eos_id, self.eot_id):
            if t is not None:
                hit |= (done == t).any(-1)
        return bool(hit.all())

    def fill_after(self, b: int) -> None:
        _, e = self.span(b)
        self.x[:, e:] = self.eos_id if self.eos_id is not None else self.pad_id


@dataclass
class Planned:
    """A step whose outcome the source already computed with the step rule: the loop commits it as is."""

    tokens: torch.Tensor      # [B, n] on the device
    host: list                # the same rows as lists of ids

    def outcome(self) -> StepOutcome:
        return StepOutcome(self.tokens, None, None, None, self.host)


@dataclass
class StepRule:
    """The baseline's step with its keyed noise: (dist, block, b, t, per-row counts) -> StepOutcome."""

    cfg: GenerationConfig
    sampler: str
    mask_id: int
    eos_id: Optional[int]
    eot_id: Optional[int]
    device: torch.device
    compiled: object = field(default=None, repr=False)   # the greedy step under torch.compile, when in use

    @classmethod
    def of(cls, backend, cfg: GenerationConfig) -> "StepRule":
        """The step of ``backend`` under ``cfg``; compiled (fullgraph) with a compiled backend at a static shape,
        where the baseline's steps and Spiffy's walk apply it to logits of the same shape, [B, n, V], so both
        run the same kernels (a step that draws noise stays eager: its generators are made per step)."""
        rule = cls(cfg, sampler_of(backend, cfg), backend.mask_id, backend.eos_id, backend.eot_id, backend.device)
        if getattr(backend, "compiled", None) and cfg.static_drafts and not rule.noisy:
            rule.compiled = compile_static(rule._greedy)
        return rule

    def _greedy(self, logits, block, n_commit):
        out = denoise_step(logits, block, self.mask_id, self.cfg, self.sampler, n_commit, None, self.eos_id,
                           self.eot_id)
        return out.tokens, out.x0, out.confidence, out.committed

    def schedule(self) -> Optional[list]:
        """Tokens committed by each step of a block (None: threshold decoding, until no mask is left)."""
        if self.cfg.threshold is not None:
            return None
        return block_schedule(self.sampler, self.cfg.block_length, self.cfg.steps_per_block)

    @property
    def noisy(self) -> bool:
        """Does a step draw noise? (Greedy steps need no generator: nothing to seed, nothing to trace.)"""
        c = self.cfg
        return c.temperature > 0 or c.remasking == "random" or (self.sampler == "dream" and bool(c.alg_temp))

    def __call__(self, dist, block: torch.Tensor, b: int, t: int, n_commit) -> StepOutcome:
        if isinstance(dist, Planned):
            return dist.outcome()
        if isinstance(dist, list):
            logits = dist[0][None] if len(dist) == 1 else torch.stack(dist)
        else:
            logits = dist
        if self.compiled is not None:
            return StepOutcome(*self.compiled(logits, block, n_commit))
        gen = step_generator(self.cfg.seed, b, t, self.device) if self.noisy else None
        return denoise_step(logits, block, self.mask_id, self.cfg, self.sampler, n_commit, gen, self.eos_id,
                            self.eot_id)


def decode_blocks(canvas: Canvas, source, step: Callable, schedule: Optional[list], observer=None,
                  on_block=None) -> list:
    """Run every block of ``canvas`` with ``source``'s distributions and ``step``; returns the steps
    taken per block. ``observer(b, t, schedule, dist, before, outcome)`` sees every step;
    ``on_block(b, rows)`` gets each row's final tokens of block b (an exception it raises ends the
    decode)."""
    cfg = canvas.cfg
    block_steps = []
    for b in range(cfg.num_blocks):
        s, e = canvas.span(b)
        block = canvas.x[:, s:e].clone()
        dist = source.first(b, block)
        t = 0
        while True:
            out = step(dist, block, b, t, None if schedule is None else [schedule[t]] * canvas.B)
            if observer is not None:
                observer(b, t, schedule, dist, block, out)
            canvas.commit(b, out.tokens)
            t += 1
            if schedule is not None:
                end = t == len(schedule)
            elif out.host is not None:
                end = not any(canvas.mask_id in row for row in out.host)
            else:
                end = not bool((out.tokens == canvas.mask_id).any())
            if end:
                break
            dist = source.next(b, t, schedule, block, out.tokens, dist)
            block = out.tokens
        block_steps.append(t)
        if on_block is not None:
            on_block(b, out.host if out.host is not None else out.tokens.tolist())
        if cfg.early_stop and b + 1 < cfg.num_blocks and canvas.stopped(b):
            canvas.fill_after(b)
            break
    return block_steps
