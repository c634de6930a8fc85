"""Reproducible per-step noise.

Every random number a sampler uses at step ``step`` of block ``block`` comes from a fresh generator
seeded by a hash of (seed, block, step). A decoder that skips model calls (Spiffy) therefore draws
exactly the noise the baseline draws at the same point of the trajectory, whatever it did before.
Within a step the draws are made in a fixed order (candidate noise for the block's positions, then
position noise for `random` remasking or Dream's alg_temp) and one draw is shared by every row of a
batch, so a prompt decodes the same in a batch as alone. Categorical draws (Dream sampler) use one
uniform per position through the inverse CDF. Generators live on the decoding device, so the same seed gives the same tokens on the same kind of
device (CPU and CUDA streams differ).
"""
from __future__ import annotations

import hashlib

import torch


def step_key(seed: int, block: int, step: int) -> int:
    h = hashlib.blake2b(f"spiffy:{seed}:{block}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def step_generator(seed: int, block: int, step: int, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(step_key(seed, block, step))
    return g
