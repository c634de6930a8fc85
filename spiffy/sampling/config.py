"""Decoding configuration (a dataclass, as in transformers' GenerationConfig)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from ..errors import ConfigError

CACHE_MODES = ("none", "prefix", "dual")
REMASKING = ("low_confidence", "random", "margin", "entropy", "left_to_right")
SAMPLERS = ("llada", "dream")
STATIC_LAYOUTS = ("batch", "packed")   # spiffy.sampling.layout.LAYOUTS (kept here: config imports no torch)


@dataclass
class GenerationConfig:
    """How the baseline masked-diffusion sampler decodes.

    gen_length masks follow the prompt and are decoded in blocks of ``block_length``, left to right.
    ``steps`` (default: gen_length, i.e. one token per step) are split evenly over blocks; or give
    ``tokens_per_step`` (k) instead. With ``threshold`` set, every masked position of the block whose
    confidence reaches it is committed (at least one per step; Fast-dLLM), and ``steps`` is ignored.

    ``sampler``: "llada" (Gumbel-max candidates in float64, LLaDA's even commit schedule) or "dream"
    (categorical candidates with top-p/top-k, Dream's linear-time schedule); None picks the model
    family's own. ``remasking``: confidence used to order positions: low_confidence (probability of the
    candidate; Dream's maskgit_plus), random, margin (top1 − top2; Dream's topk_margin), entropy
    (negative entropy; Dream's entropy), left_to_right (leftmost masked positions first: semi-autoregressive,
    what the AR mode's sampled dLLM drafts use).

    Noise is drawn from a generator keyed by (seed, block, step), never from a shared stream.
    """

    gen_length: int = field(default=128, metadata={"help": "Tokens to generate."})
    block_length: int = field(default=32, metadata={"help": "Block size (decoded left to right)."})
    steps: Optional[int] = field(default=None, metadata={"help": "Denoising steps in all [default: gen-length]."})
    tokens_per_step: Optional[int] = field(default=None,
                                           metadata={"help": "Commit k tokens per step (instead of --steps)."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0 = greedy)."})
    cfg_scale: float = field(default=0.0, metadata={"help": "Classifier-free guidance scale."})
    remasking: str = field(default="low_confidence", metadata={"help": "Confidence used to order positions.",
                                                               "choices": REMASKING})
    threshold: Optional[float] = field(default=None, metadata={
        "help": "Confidence-threshold parallel decoding (Fast-dLLM), in (0, 1]."})
    cache: str = field(default="none", metadata={"help": "KV cache (Fast-dLLM prefix or dual cache).",
                                                 "choices": CACHE_MODES})
    seed: int = field(default=0, metadata={"help": "Seed of the keyed per-step noise."})
    sampler: Optional[str] = field(default=None, metadata={"help": "Sampler family [default: the model's own].",
                                                           "choices": SAMPLERS})
    top_p: Optional[float] = field(default=None, metadata={"help": "Nucleus filtering (Dream sampler)."})
    top_k: Optional[int] = field(default=None, metadata={"help": "Top-k filtering (Dream sampler)."})
    alg_temp: Optional[float] = field(default=None, metadata={
        "help": "Dream sampler: temperature of the confidence when choosing which positions to commit "
                "(unset: the most confident positions)."})
    logits_eos_inf: bool = field(default=False, metadata={
        "help": "Never propose EOS as a candidate token (LLaDA's logits_eos_inf)."})
    confidence_eos_eot_inf: bool = field(default=False, metadata={
        "help": "Commit positions whose candidate is EOS or end-of-turn after every other masked one "
                "(LLaDA's confidence_eos_eot_inf)."})
    early_stop: bool = field(default=False, metadata={
        "help": "Stop after the block in which EOS/end-of-turn was committed."})
    static_drafts: int = field(default=0, metadata={
        "help": "Run every step at the static shape of a Spiffy call verifying this many drafts per row "
                "(0: the plain shape). The baseline then computes bit for bit what Spiffy computes."})
    static_layout: str = field(default="batch", metadata={
        "help": "Layout of the static shape (Spiffy's --verify).", "choices": STATIC_LAYOUTS})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    def resolved_steps(self) -> int:
        if self.tokens_per_step is not None:
            return self.gen_length // self.tokens_per_step
        return self.steps if self.steps is not None else self.gen_length

    @property
    def steps_per_block(self) -> int:
        return self.resolved_steps() // self.num_blocks

    def validate(self, prompt_length: int = 0, context_length: Optional[int] = None) -> "GenerationConfig":
        if self.gen_length <= 0:
            raise ConfigError(f"gen_length must be positive, got {self.gen_length}")
        if self.block_length <= 0:
            raise ConfigError(f"block_length must be positive, got {self.block_length}")
        if self.gen_length % self.block_length:
            raise ConfigError(f"gen_length {self.gen_length} is not divisible by block_length {self.block_length}")
        if self.tokens_per_step is not None:
            if self.steps is not None:
                raise ConfigError("give steps or tokens_per_step, not both")
            if self.tokens_per_step <= 0:
                raise ConfigError(f"tokens_per_step must be positive, got {self.tokens_per_step}")
            if self.block_length % self.tokens_per_step:
                raise ConfigError(
                    f"tokens_per_step {self.tokens_per_step} must divide block_length {self.block_length}")
        steps = self.resolved_steps()
        if steps <= 0:
            raise ConfigError(f"steps must be positive, got {steps}")
        if steps % self.num_blocks:
            raise ConfigError(f"steps {steps} is not divisible by the number of blocks {self.num_blocks}")
        if steps > self.gen_length:
            raise ConfigError(f"steps {steps} exceed gen_length {self.gen_length}: a step would commit nothing")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must lie in (0, 1], got {self.threshold}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.cfg_scale < 0:
            raise ConfigError(f"cfg_scale must be >= 0, got {self.cfg_scale}")
        if self.cache not in CACHE_MODES:
            raise ConfigError(f"cache must be one of {CACHE_MODES}, got {self.cache!r}")
        if self.remasking not in REMASKING:
            raise ConfigError(f"remasking must be one of {REMASKING}, got {self.remasking!r}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k <= 0:
            raise ConfigError(f"top_k must be positive, got {self.top_k}")
        if not isinstance(self.static_drafts, int) or self.static_drafts < 0:
            raise ConfigError(f"static_drafts must be a non-negative integer, got {self.static_drafts!r}")
        if self.static_layout not in STATIC_LAYOUTS:
            raise ConfigError(f"static_layout must be one of {STATIC_LAYOUTS}, got {self.static_layout!r}")
        if prompt_length <= 0:
            raise ConfigError("the prompt is empty")
        if context_length is not None and prompt_length + self.gen_length > context_length:
            raise ConfigError(f"prompt ({prompt_length} tokens) + gen_length ({self.gen_length}) exceeds the model's "
                              f"context of {context_length} tokens")
        return self
