"""What every decode returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass
class GenerationResult:
    prompt_ids: list          # per row, the prompt as fed to the model (after any template)
    token_ids: list           # per row, the generated tokens (gen_length of them)
    text: list                # per row, decoded up to the first EOS / end-of-turn
    nfe: int                  # model forward calls (CFG's unconditional pass counts as one more)
    tokens_processed: int     # query tokens run through the model, summed over calls and rows
    block_steps: list         # steps taken in each block
    wall_s: float
    model_s: float = 0.0      # time inside model forwards
    stats: Optional[Any] = None   # decoder-specific statistics (Spiffy: SpeculativeStats)
    config: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)   # (query tokens, frozen-context tokens) per counted model call

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.stats is not None and hasattr(self.stats, "to_dict"):
            d["stats"] = self.stats.to_dict()
        return d
