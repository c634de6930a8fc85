"""`spiffy sample --target T --drafter D …`: AR-verifier mode of the sample command.

The options are declared here and attached to ``spiffy sample`` by one decorator, so the command
module only routes to :func:`run_ar_sample` when ``--target`` is given.
"""
from __future__ import annotations

import json

import click

AR_SAMPLE_PARAMS = ("target", "drafter", "draft_length", "adaptive", "min_draft", "max_draft", "path_search", "tree",
                    "tree_nodes", "drafter_steps", "gate")


def ar_sample_options(f):
    opts = [
        click.option("--target", default=None,
                     help="AR-verifier mode: a causal-LM target (checkpoint dir or hub id) whose output is kept "
                          "exactly; --drafter (default: --model) drafts for it."),
        click.option("--drafter", default=None,
                     help="AR mode: `ngram` (model-free prompt lookup), a block drafter trained for the target "
                          "(path or bundled name, e.g. spiffy-smollm2-drafter), a drafter checkpoint (a LLaDA/Dream "
                          "dLLM, or a small causal LM for classic speculative decoding) [default: the best drafter for "
                          "a named target, else --model, else the bundled dLLM]."),
        click.option("--draft-length", type=int, default=None, help="AR mode: draft length γ [default: 8]."),
        click.option("--adaptive", is_flag=True, help="AR mode: DiffuSpec adaptive draft length (γ in "
                                                      "[--min-draft, --max-draft])."),
        click.option("--min-draft", type=int, default=20, show_default=True, help="AR mode: adaptive γ lower bound."),
        click.option("--max-draft", type=int, default=30, show_default=True, help="AR mode: adaptive γ upper bound."),
        click.option("--path-search", is_flag=True,
                     help="AR mode: DiffuSpec causal-consistency path search (with the shipped n-gram model "
                          "built for the target's tokenizer)."),
        click.option("--tree", type=int, default=0, show_default=True,
                     help="AR mode: D²SD draft tree with this many branches (0 = one chain)."),
        click.option("--tree-nodes", type=int, default=0, show_default=True,
                     help="AR mode: a best-first tree of this many nodes from one draft's per-slot distributions "
                          "(DDTree; 0 = none)."),
        click.option("--drafter-steps", type=int, default=1, show_default=True,
                     help="AR mode: denoising steps of a dLLM drafter."),
        click.option("--gate", type=float, default=None,
                     help="AR mode: cost gate for keyed drafts (prompt lookup): the time of a drafted round over a "
                          "plain one; a draft is verified only when its running acceptance pays for it "
                          "[default: 1.8 on CPU, off on GPU; 0 = off]."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def run_ar_sample(target, drafter, model, prompt, device, dtype, raw, as_json, draft_length, adaptive, min_draft,
                  max_draft, path_search, tree, tree_nodes, drafter_steps, gate, gen_length, temperature, seed, **_):
    from ..errors import ConfigError, SpiffyError
    from ..ar.decode import ARDecodeConfig, generate_ar
    from ..ar.pair import default_drafter_name, load_drafter_model, make_drafter
    from ..ar.target import load_causal_lm

    def fail(msg):
        click.echo(f"error: {msg}", err=True)
        raise SystemExit(2)

    try:
        if adaptive and draft_length is not None:
            raise ConfigError("give --draft-length or --adaptive, not both")
        cfg = ARDecodeConfig(max_new_tokens=gen_length, draft_length=8 if draft_length is None else draft_length,
                             adaptive=adaptive, min_draft=min_draft, max_draft=max_draft, path_search=path_search,
                             tree=tree, tree_nodes=tree_nodes, drafter_steps=drafter_steps, temperature=temperature, seed=seed,
                             gate=gate).check()
        tgt = load_causal_lm(target, device=device, dtype=dtype)
        dsrc = drafter or model or default_drafter_name(target)
        if dsrc is None:
            from ..backends.loader import default_model_path

            dsrc = str(default_model_path())
        d = make_drafter(load_drafter_model(dsrc, device, dtype), tgt, steps=drafter_steps, temperature=temperature)
        res = generate_ar(tgt, d, prompt, cfg, chat=not raw)
    except SpiffyError as e:
        fail(str(e))
    if as_json:
        out = {"model": tgt.name, "target": tgt.name, "drafter": d.name, "strategy": res.strategy,
               "prompt_ids": res.prompt_ids, "token_ids": res.token_ids, "text": res.text, "nfe": res.nfe,
               "wall_s": round(res.wall_s, 4), "target_calls": res.target_calls, "drafter_calls": res.drafter_calls,
               "mean_accepted": round(res.mean_accepted, 4), "accepted": res.accepted, "gated": res.gated,
               "tokens_per_s": round(res.tokens_per_s, 3), "config": res.config}
        click.echo(json.dumps(out))
    else:
        click.echo(res.text)
