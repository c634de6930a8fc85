"""DiffuSpec adaptive draft length.

Two exponential moving averages (weight ``alpha`` = 0.5 on the newest value; the
first observation initialises both): of the drafted length
before the first EOS, and of the accepted length. The next γ is the drafted-length EMA, plus
``grow`` (10) when the accepted EMA has caught up with it (everything drafted tends to be accepted),
clipped to [``min_len``, ``max_len``] (default [20, 30]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass
class AdaptiveLength:
    min_len: int = 20
    max_len: int = 30
    grow: int = 10
    alpha: float = 0.5
    gamma: int = field(default=0)
    drafted_ema: float = field(default=0.0)
    accepted_ema: float = field(default=0.0)
    history: list = field(default_factory=list)

    def __post_init__(self):
        if self.min_len < 1 or self.max_len < self.min_len:
            raise ConfigError(f"adaptive draft length bounds must satisfy 1 <= min <= max "
                              f"(got [{self.min_len}, {self.max_len}])")
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"EMA weight must be in (0, 1] (got {self.alpha})")
        if self.gamma <= 0:
            self.gamma = self.min_len
        self.drafted_ema = float(self.gamma)

    def observe(self, drafted_before_eos: int, accepted: int) -> int:
        """Record one round and return the next draft length."""
        a = self.alpha if self.history else 1.0   # the first observation starts both averages
        self.drafted_ema = a * drafted_before_eos + (1 - a) * self.drafted_ema
        self.accepted_ema = a * accepted + (1 - a) * self.accepted_ema
        g = math.ceil(self.drafted_ema)
        if self.accepted_ema >= self.drafted_ema:
            g += self.grow
        self.gamma = int(min(self.max_len, max(self.min_len, g)))
        self.history.append(self.gamma)
        return self.gamma
