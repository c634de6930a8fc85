"""The baseline masked-diffusion sampler (LLaDA / Dream / Fast-dLLM semantics)."""
from __future__ import annotations

import time

import torch

from ..result import GenerationResult
from .config import GenerationConfig
from .noise import step_generator
from .schedule import block_schedule
from .session import DecodeSession, _sync
from .step import denoise_step


def sampler_of(backend, cfg: GenerationConfig) -> str:
    return cfg.sampler or ("dream" if backend.family == "dream" else "llada")


def block_done(session: DecodeSession, block: torch.Tensor) -> bool:
    return not bool((block == session.backend.mask_id).any())


def stop_early(session: DecodeSession, b: int) -> bool:
    """After block b: has every row committed an EOS / end-of-turn (all before it is unmasked, since
    blocks are decoded left to right)?"""
    be = session.backend
    _, e = session.span(b)
    done = session.x[:, session.P:e]
    hit = torch.zeros(session.B, dtype=torch.bool, device=done.device)
    for t in (be.eos_id, be.eot_id):
        if t is not None:
            hit |= (done == t).any(-1)
    return bool(hit.all())


def fill_after_stop(session: DecodeSession, b: int) -> None:
    _, e = session.span(b)
    session.x[:, e:] = session.backend.eos_id if session.backend.eos_id is not None else session.backend.pad_id


def finish(session: DecodeSession, prompts, block_steps, t0, stats=None) -> GenerationResult:
    _sync(session.backend.device)
    gen = session.generated().tolist()
    return GenerationResult(
        prompt_ids=[list(p) for p in prompts], token_ids=gen, text=[session.backend.decode(g) for g in gen],
        nfe=session.nfe, tokens_processed=session.tokens_processed, block_steps=block_steps,
        wall_s=time.perf_counter() - t0, model_s=session.model_time, stats=stats, config=session.cfg.to_dict())


@torch.no_grad()
def generate_baseline(backend, prompts: list[list[int]], cfg: GenerationConfig, observer=None,
                      on_block=None) -> GenerationResult:
    """The baseline decode. ``observer(b, t, schedule, logits, before, outcome)``, when given, is called
    after every step with the block's logits, its state before the step and the step's
    ``StepOutcome`` (traces for replay, calibration and speculatability are recorded this way, from
    this one loop). ``on_block(b, rows)``, when given, is called when block ``b`` is final with each
    row's tokens of that block (a server streams them); an exception it raises ends the decode."""
    cfg.validate(max(len(p) for p in prompts), backend.context_length)
    t0 = time.perf_counter()
    session = DecodeSession(backend, prompts, cfg)
    sampler = sampler_of(backend, cfg)
    spb = cfg.steps_per_block
    block_steps = []
    for b in range(cfg.num_blocks):
        s, e = session.span(b)
        block = session.x[:, s:e].clone()
        schedule = None if cfg.threshold is not None else block_schedule(sampler, cfg.block_length, spb)
        t = 0
        while True:
            logits = session.begin_block(b) if t == 0 else session.block_logits(b, block)
            gen = step_generator(cfg.seed, b, t, backend.device)
            n_commit = None if schedule is None else [schedule[t]] * session.B
            out = denoise_step(logits, block, backend.mask_id, cfg, sampler, n_commit, gen,
                               backend.eos_id, backend.eot_id)
            if observer is not None:
                observer(b, t, schedule, logits, block, out)
            block = out.tokens
            session.commit(b, block)
            t += 1
            if (schedule is not None and t == len(schedule)) or (schedule is None and block_done(session, block)):
                break
        block_steps.append(t)
        if on_block is not None:
            on_block(b, block.tolist())
        if cfg.early_stop and b + 1 < cfg.num_blocks and stop_early(session, b):
            fill_after_stop(session, b)
            break
    return finish(session, prompts, block_steps, t0)
