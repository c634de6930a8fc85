"""What an AR-verifier decode returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ARResult:
    prompt_ids: list          # the prompt as fed to the target (after any template)
    token_ids: list           # generated tokens (up to and including the first stop token)
    text: str                 # decoded up to the first stop token
    nfe: int                  # model forwards: target_calls + drafter_calls
    wall_s: float
    target_calls: int = 0     # target forwards, prefill included
    drafter_calls: int = 0    # drafter forwards (a batched pass over tree branches counts once)
    rounds: int = 0           # verification forwards (target_calls minus the prefill)
    mean_accepted: float = 0.0   # tokens committed per verification forward (accepted drafts + 1)
    accepted: list = field(default_factory=list)   # accepted draft tokens in each round
    drafted: list = field(default_factory=list)    # draft tokens proposed in each round (tree: nodes)
    gated: int = 0            # rounds whose draft the cost gate did not verify (plain rounds instead)
    target_s: float = 0.0
    drafter_s: float = 0.0
    strategy: str = "plain"
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_ids) / self.wall_s if self.wall_s > 0 else 0.0
