"""What a Spiffy decode reports next to its output."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional

from .graph import formula_str


@dataclass
class SpeculativeStats:
    nfe: int = 0                       # model forward calls (CFG's unconditional half counts as one more)
    block_starts: int = 0              # full forwards that open a block (never carry drafts)
    rounds: int = 0                    # verification forwards (current state + drafts)
    steps: int = 0                     # baseline steps taken (equal to the baseline's count)
    drafts_verified: int = 0           # draft states evaluated, summed over rounds
    accepted: int = 0                  # drafts accepted = model calls saved by drafts
    skipped_empty_steps: int = 0       # steps that commit nothing (Dream schedule): state unchanged, no call
    accepted_per_round: dict = field(default_factory=dict)      # accepted count -> rounds
    depth_offered: dict = field(default_factory=dict)           # depth -> drafts verified
    depth_accepted: dict = field(default_factory=dict)
    node_offered: dict = field(default_factory=dict)            # formula -> drafts verified
    node_accepted: dict = field(default_factory=dict)
    model_s: float = 0.0               # inside model forwards
    drafting_s: float = 0.0            # building sources, instantiating and pruning drafts
    bookkeeping_s: float = 0.0         # assembling verification inputs, the acceptance walk
    wall_s: float = 0.0
    verify: str = "batch"
    exact: bool = True                 # False: packed verification without a frozen context (near-lossless)
    mismatch_checked: int = 0          # accepted drafts re-checked against a real forward (measure_mismatch)
    mismatches: int = 0                # ... whose next state would have differed
    max_logit_diff: Optional[float] = None
    graph_source: str = "default"
    budget: int = 0

    def count(self, table: str, key, n: int = 1) -> None:
        d = getattr(self, table)
        d[key] = d.get(key, 0) + n

    @property
    def mean_accepted_per_round(self) -> float:
        return self.accepted / self.rounds if self.rounds else 0.0

    def merge(self, other: "SpeculativeStats") -> "SpeculativeStats":
        for k in ("nfe", "block_starts", "rounds", "steps", "drafts_verified", "accepted", "skipped_empty_steps",
                  "mismatch_checked", "mismatches"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for k in ("model_s", "drafting_s", "bookkeeping_s", "wall_s"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for k in ("accepted_per_round", "depth_offered", "depth_accepted", "node_offered", "node_accepted"):
            mine = getattr(self, k)
            for kk, v in getattr(other, k).items():
                mine[kk] = mine.get(kk, 0) + v
        if other.max_logit_diff is not None:
            self.max_logit_diff = max(self.max_logit_diff or 0.0, other.max_logit_diff)
        self.exact = self.exact and other.exact
        return self

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["accepted_per_round"] = {str(k): v for k, v in sorted(self.accepted_per_round.items())}
        d["acceptance_by_depth"] = {
            str(k): {"offered": v, "accepted": self.depth_accepted.get(k, 0),
                     "rate": round(self.depth_accepted.get(k, 0) / v, 4) if v else 0.0}
            for k, v in sorted(self.depth_offered.items())}
        d["acceptance_by_node"] = {
            formula_str(k): {"offered": v, "accepted": self.node_accepted.get(k, 0),
                             "rate": round(self.node_accepted.get(k, 0) / v, 4) if v else 0.0}
            for k, v in sorted(self.node_offered.items(), key=lambda kv: (len(kv[0]), kv[0]))}
        for k in ("depth_offered", "depth_accepted", "node_offered", "node_accepted"):
            d.pop(k)
        d["mean_accepted_per_round"] = round(self.mean_accepted_per_round, 4)
        other = self.wall_s - self.model_s - self.drafting_s - self.bookkeeping_s
        d["time_split_s"] = {"model": round(self.model_s, 4), "drafting": round(self.drafting_s, 4),
                             "verification_bookkeeping": round(self.bookkeeping_s, 4),
                             "other": round(max(other, 0.0), 4)}
        for k in ("model_s", "drafting_s", "bookkeeping_s", "wall_s"):
            d[k] = round(d[k], 4)
        return d
