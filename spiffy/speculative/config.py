"""How Spiffy speculates (the baseline's own settings stay in GenerationConfig)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from ..errors import ConfigError
from ..sampling.config import STATIC_LAYOUTS

VERIFY_MODES = STATIC_LAYOUTS   # spiffy.speculative.verifier's (this module imports no torch: the CLI reads it)

if TYPE_CHECKING:
    import networkx as nx

    from .proposer import Pruner


MAX_BUDGET = 64   # draft states per model call; the graphs of larger budgets take seconds to build and never pay


@dataclass
class SpeculativeConfig:
    """Spiffy's settings.

    ``budget``: draft states verified per model call (D), used to pick a calibrated graph
    (``calibration/<model>/<setting>/D<budget>.json``) or to build the default graph.
    ``graph``: a draft graph (``networkx.DiGraph`` from :mod:`spiffy.speculative.graph`) or a JSON file;
    overrides ``budget``.
    ``verify``:
      - ``"batch"``: every draft state is a full batch copy sharing the cache context. Exactly
        lossless for every model and cache mode.
      - ``"packed"``: drafts appended to the query in one sequence under a 4-D attention mask. Exactly
        lossless only under the dual cache (``cache="dual"``). With cache ``none``/``prefix`` on a
        bidirectional model it is NEAR-LOSSLESS, NOT LOSSLESS: the positions a draft attends to were
        computed with the current block rather than the draft's, so outputs may differ from the
        baseline (a NearLosslessWarning is issued; ``measure_mismatch=True`` counts the differences).
    ``prune``: an int D* (keep the best D* nodes per round by the geometric mean of the picked tokens'
    probabilities, connected to the root), ``"cost:<table>"`` (per round, the drafts whose expected saving
    pays for the wider call under a device cost table: :mod:`spiffy.speculative.cost_pruning`), or a callable
    ``(graph, instantiation) -> kept nodes`` such as a :class:`~spiffy.speculative.proposer.Pruner` with its
    own score function. Pruning never changes the output, only how many drafts each call verifies. ``use_calibration``: look for a calibrated graph (default True);
    ``calibration_dir`` overrides the calibration root; a calibrated graph whose model fingerprint differs
    from the model in use is refused unless ``allow_mismatch`` (for experiments). ``measure_mismatch`` (packed, non-dual): re-run
    every accepted draft as a real forward (not counted in NFE) and count next-state differences.
    ``static``: run every call at one static shape (:mod:`spiffy.sampling.layout`): each verification padded to
    the graph's budget, every row at a fixed slot, logits at every block position. The real state's logits
    are then the bits the baseline computes with ``GenerationConfig(static_drafts=budget,
    static_layout=verify)`` (:meth:`static_config`), on any device; a compiled step needs it too.
    """

    budget: int = field(default=8, metadata={
        "help": "Spiffy: draft states verified per model call (D); picks the calibrated graph or builds the default."})
    graph: Union[None, str, Path, "nx.DiGraph"] = field(default=None, metadata={
        "help": "Spiffy: a draft graph JSON file (instead of --budget).", "type": str})
    verify: str = field(default="batch", metadata={
        "help": "Spiffy verification: batch copies (exact everywhere) or packed (exact with --cache dual, "
                "near-lossless otherwise).", "choices": VERIFY_MODES})
    prune: Union[None, int, str, "Pruner"] = field(default=None, metadata={
        "help": "Spiffy runtime pruning: N (verify the best N draft states per round) or cost:TABLE (per round, the "
                "drafts whose expected saving pays for the wider call, priced by a cost table: a bundled name such "
                "as h100-llada8b-bf16, or a JSON file).", "type": str})
    use_calibration: bool = field(default=True, metadata={
        "help": "Spiffy: use the calibrated graph for this model and setting when there is one."})
    calibration_dir: Optional[str] = field(default=None, metadata={
        "help": "Spiffy: where calibrated graphs are [default: the bundled calibration/]."})
    measure_mismatch: bool = field(default=False, metadata={
        "help": "Spiffy, packed without the dual cache: re-run each accepted draft (not counted) and count the steps "
                "whose outcome would differ."})
    allow_mismatch: bool = field(default=False, metadata={
        "help": "Spiffy: use a calibrated graph even when it was calibrated for another model (experiments only)."})
    static: bool = field(default=False, metadata={
        "help": "Spiffy: every call at one static shape (padded to the budget): bit for bit the baseline run with "
                "--static-drafts BUDGET --static-layout VERIFY, on any device; what --compile wants."})

    def validate(self) -> "SpeculativeConfig":
        if self.verify not in VERIFY_MODES:
            raise ConfigError(f"verify must be one of {VERIFY_MODES}, got {self.verify!r}")
        if self.graph is None and (not isinstance(self.budget, int) or self.budget < 0):
            raise ConfigError(f"budget must be a non-negative integer, got {self.budget!r}")
        if self.graph is None and self.budget > MAX_BUDGET:
            raise ConfigError(f"budget {self.budget} is beyond anything useful: each draft state is one more copy "
                              f"evaluated per model call (the paper's budgets are 3-10); use at most {MAX_BUDGET}")
        self.prune = prune_value(self.prune)
        if isinstance(self.prune, str):
            from ..costs import CostTable

            CostTable.load(self.prune[len("cost:"):])    # a missing or broken table fails here, before decoding
        if self.calibration_dir is not None and not Path(self.calibration_dir).is_dir():
            raise ConfigError(f"calibration_dir {str(self.calibration_dir)!r} is not a directory (a typo would "
                              "silently fall back to the default graph)")
        return self

    def static_config(self, cfg, budget: Optional[int] = None):
        """``cfg`` at this configuration's static shape (the baseline that Spiffy equals bit for bit); ``budget``:
        the drafts per call actually used (a calibrated or user graph's), default ``self.budget``."""
        import dataclasses

        return dataclasses.replace(cfg, static_drafts=self.budget if budget is None else budget,
                                   static_layout=self.verify)

    def pruner(self):
        from .proposer import Pruner

        prune = prune_value(self.prune)
        if prune is None:
            return None
        if isinstance(prune, int):
            return Pruner(prune)
        if isinstance(prune, str):
            from .cost_pruning import cost_pruner

            return cost_pruner(prune[len("cost:"):])
        return prune

    def to_dict(self) -> dict:
        g = self.graph
        return {"budget": self.budget, "graph": None if g is None else (str(g) if isinstance(g, (str, Path))
                                                                         else "<DiGraph>"),
                "verify": self.verify, "prune": self.prune if isinstance(self.prune, (int, str, type(None)))
                else repr(self.prune), "use_calibration": self.use_calibration,
                "measure_mismatch": self.measure_mismatch, "static": self.static}


def prune_value(prune):
    """``prune`` as the decoder takes it: None, an int >= 0, ``"cost:<table>"`` or a pruner (a callable); the
    CLI's text (``"3"``, ``"cost:h100-llada8b-bf16"``) becomes the first two."""
    if isinstance(prune, str):
        text = prune.strip()
        if text.isdigit():
            return int(text)
        if text.startswith("cost:") and text[len("cost:"):]:
            return text
        raise ConfigError(f"prune must be a non-negative integer or cost:TABLE, got {prune!r}")
    if prune is None or callable(prune) or (isinstance(prune, int) and not isinstance(prune, bool) and prune >= 0):
        return prune
    raise ConfigError(f"prune must be a non-negative integer, cost:TABLE or a pruner, got {prune!r}")


class NearLosslessWarning(UserWarning):
    """Packed verification without a frozen context: outputs may differ from the baseline."""
