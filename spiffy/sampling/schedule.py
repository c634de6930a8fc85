"""How many tokens each step of a block commits."""
from __future__ import annotations

import torch


def even_schedule(n_masked: int, steps: int) -> list[int]:
    """LLaDA's schedule: an even split, the remainder going to the earliest steps."""
    base, rem = divmod(n_masked, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


def dream_schedule(n_masked: int, steps: int, eps: float = 1e-3) -> list[int]:
    """Dream's schedule: with t_i = linspace(1, eps, steps + 1), step i commits
    int(remaining * (1 - t_{i+1} / t_i)) tokens and the last step commits whatever remains."""
    ts = torch.linspace(1, eps, steps + 1)  # float32, as the reference computes it
    out, remaining = [], n_masked
    for i in range(steps):
        k = remaining if i == steps - 1 else int(remaining * (1 - ts[i + 1] / ts[i]))
        out.append(k)
        remaining -= k
    return out


def block_schedule(sampler: str, n_masked: int, steps: int) -> list[int]:
    return dream_schedule(n_masked, steps) if sampler == "dream" else even_schedule(n_masked, steps)
