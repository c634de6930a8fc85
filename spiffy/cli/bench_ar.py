"""The options `spiffy bench` adds for ``--mode ar`` (the AR benchmark itself is spiffy.bench.ar)."""
from __future__ import annotations

import click

from ..bench.ar import DLLM_DEFAULT, LOOKUP_DEFAULT, STRATEGIES


def ar_click_options() -> list:
    """The options `spiffy bench` adds for ``--mode ar`` (spiffy/cli/bench.py attaches them)."""
    return [
        click.option("--target", "ar_target", default=None,
                     help="[ar] AR target: checkpoint, hub id or a name such as smollm2-135m-instruct "
                          "[default: models/spiffy-ar-ref]."),
        click.option("--ar-drafter", default=None,
                     help="[ar] Small AR drafter for the classic baseline [default: models/spiffy-ar-draft]."),
        click.option("--block-drafter", default=None,
                     help="[ar] Block drafter for the diffusion strategies (path or bundled name) [default: the one "
                          "bundled for a named target, e.g. spiffy-smollm2-drafter]."),
        click.option("--tree-nodes", type=int, default=32, show_default=True,
                     help="[ar] Nodes of the best-first tree (diffusion+tree)."),
        click.option("--block-min-draft", type=int, default=4, show_default=True,
                     help="[ar] Adaptive γ lower bound (block drafter; the upper bound is its block)."),
        click.option("--strategies", default=None,
                     help=f"[ar] Comma-separated, from: {', '.join(STRATEGIES)} [default: {LOOKUP_DEFAULT} for a "
                          f"named target without --model, else {DLLM_DEFAULT}]."),
        click.option("--draft-length", "draft_length", type=int, default=8, show_default=True,
                     help="[ar] Draft length γ (fixed-length strategies; the AR drafter uses --ar-draft-length)."),
        click.option("--ar-draft-length", type=int, default=4, show_default=True,
                     help="[ar] Draft length of the classic AR drafter."),
        click.option("--tree-branches", type=int, default=4, show_default=True, help="[ar] Branches of the tree."),
        click.option("--drafter-steps", type=int, default=1, show_default=True,
                     help="[ar] Denoising steps of the dLLM drafter."),
        click.option("--min-draft", type=int, default=20, show_default=True, help="[ar] Adaptive γ lower bound (dLLM)."),
        click.option("--max-draft", type=int, default=30, show_default=True, help="[ar] Adaptive γ upper bound (dLLM)."),
        click.option("--lookup-min-draft", type=int, default=2, show_default=True,
                     help="[ar] Adaptive γ lower bound (prompt lookup)."),
        click.option("--lookup-max-draft", type=int, default=16, show_default=True,
                     help="[ar] Adaptive γ upper bound (prompt lookup)."),
        click.option("--hf-lookup-tokens", default="3,10", show_default=True,
                     help="[ar] transformers prompt_lookup_num_tokens settings to run (the best is reported as "
                          "hf_prompt_lookup)."),
        click.option("--extra-masks", type=int, default=0, show_default=True,
                     help="[ar] Masks appended after the drafted slots (context only, never drafted)."),
        click.option("--ngram", default=None,
                     help="[ar] n-gram artifact for path search [default: the shipped one for the target's tokenizer]."),
    ]
