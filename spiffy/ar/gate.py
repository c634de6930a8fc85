"""A cost gate: verify a draft only when it is expected to pay for its verification.

On a CPU a target forward over 1 + k tokens costs far more than one over a single token
(SmolLM2-135M, one thread: ~63 ms for 1 token, ~115-130 ms for 2-9), so a draft that is usually
rejected makes decoding *slower*. ``cost`` is that ratio: the time of a drafted round over a plain one.
Per draft *key* (the drafter's own description of how trustworthy a draft is: for prompt lookup, the
length of the matched suffix) the gate keeps an exponential moving average of the draft tokens
accepted, and verifies a draft when ``1 + accepted >= cost`` (a drafted round is expected to commit
tokens at least as fast as a plain one); otherwise the round is plain. A key that keeps being refused is
still tried every ``explore_every`` refusals, so its estimate can recover.

The cost is a fixed number, not a live timing, so the gate's decisions depend only on the tokens:
runs are reproducible (same NFE; with sampling, same seed → same tokens). The gate only chooses
*whether* a draft is verified; what is committed is decided by verification as always, so outputs never
change. Drafts without a key are always verified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Optional

from ..errors import ConfigError


CPU_VERIFY_COST = 1.8   # drafted / plain round time measured for SmolLM2-135M on this project's 2-core CPU


@dataclass
class DraftGate:
    cost: float = CPU_VERIFY_COST  # time of a drafted round / time of a plain round
    alpha: float = 0.2            # EMA weight of the newest observation
    explore_every: int = 8        # refusals of one key before it is tried once anyway
    prior_accepted: float = 1.0   # accepted tokens assumed for a key never tried
    accepted: dict = field(default_factory=dict)
    refused: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"gate EMA weight must be in (0, 1] (got {self.alpha})")
        if self.cost < 0:
            raise ConfigError(f"gate cost must be >= 0 (got {self.cost})")
        if self.explore_every < 1:
            raise ConfigError(f"gate explore_every must be >= 1 (got {self.explore_every})")

    def _ema(self, old: Optional[float], new: float) -> float:
        return new if old is None else self.alpha * new + (1 - self.alpha) * old

    def allow(self, key: Optional[Hashable]) -> bool:
        if key is None:
            return True
        a = self.accepted.get(key, self.prior_accepted)
        if 1 + a >= self.cost:
            self.refused[key] = 0
            return True
        self.refused[key] = self.refused.get(key, 0) + 1
        if self.refused[key] >= self.explore_every:
            self.refused[key] = 0
            return True
        return False

    def observe(self, key: Optional[Hashable], accepted: int):
        """Record a verified draft of ``key`` that had ``accepted`` tokens accepted."""
        if key is not None:
            self.accepted[key] = self._ema(self.accepted.get(key), float(accepted))
