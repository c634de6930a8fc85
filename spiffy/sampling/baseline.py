"""The baseline masked-diffusion sampler (LLaDA / Dream / Fast-dLLM semantics): the block loop with
the model's forward on the current state as its source of distributions."""
from __future__ import annotations

import time

import torch

from ..result import GenerationResult
from .config import GenerationConfig
from .loop import StepRule, decode_blocks
from .session import DecodeSession, _sync


class ModelSource:
    """Every distribution is a forward of the state (the block's first one builds the cache)."""

    def __init__(self, session: DecodeSession):
        self.session = session

    def first(self, b: int, block=None) -> torch.Tensor:
        return self.session.begin_block(b)

    def next(self, b, t, schedule, before, after, dist) -> torch.Tensor:
        return self.session.block_logits(b, after)


def finish(session: DecodeSession, prompts, block_steps, t0, stats=None, config=None) -> GenerationResult:
    _sync(session.backend.device)
    gen = session.generated().tolist()
    return GenerationResult(
        prompt_ids=[list(p) for p in prompts], token_ids=gen, text=[session.backend.decode(g) for g in gen],
        nfe=session.nfe, tokens_processed=session.tokens_processed, block_steps=block_steps,
        wall_s=time.perf_counter() - t0, model_s=session.clock.total(), stats=stats,
        config=config or session.cfg.to_dict(), calls=session.calls)


@torch.no_grad()
def generate_baseline(backend, prompts: list[list[int]], cfg: GenerationConfig, observer=None,
                      on_block=None) -> GenerationResult:
    """The baseline decode. ``observer(b, t, schedule, logits, before, outcome)``, when given, is called
    after every step with the block's logits, its state before the step and the step's
    ``StepOutcome`` (traces for replay and calibration are recorded this way). ``on_block(b, rows)``,
    when given, is called when block ``b`` is final with each row's tokens of that block (a server
    streams them); an exception it raises ends the decode. The result's ``wall_s`` leaves out the time
    spent inside ``observer``, so a traced decode times like a plain one."""
    cfg.validate(max(len(p) for p in prompts), backend.context_length)
    t0 = time.perf_counter()
    session = DecodeSession(backend, prompts, cfg)
    step = StepRule.of(backend, cfg)
    spent = [0.0]

    def timed(*args):
        t = time.perf_counter()
        observer(*args)
        spent[0] += time.perf_counter() - t

    block_steps = decode_blocks(session, ModelSource(session), step, step.schedule(),
                                timed if observer is not None else None, on_block)
    res = finish(session, prompts, block_steps, t0)
    res.wall_s -= spent[0]
    return res
