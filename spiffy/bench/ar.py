"""`spiffy bench --mode ar`: dLLM drafters (and a classic small-AR drafter) for an AR target.

For each prompt the target's plain greedy decoding (our cached loop, the wall-clock baseline) and
its own transformers ``generate`` (the reference output) run first; then every strategy decodes the
same prompt. Reported per strategy and dataset: mean tokens per target call (accepted drafts + the
target's own token), target and drafter calls, tokens/s, the wall-clock ratio vs plain decoding, and
the rate of outputs identical to the target's ``generate``. Writes ``ar_bench.json``, ``ar_bench.md``
and ``ar_bench.png``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import click

STRATEGIES = {
    "dllm": dict(),
    "path": dict(path_search=True),
    "adaptive": dict(adaptive=True),
    "path+adaptive": dict(path_search=True, adaptive=True),
    "tree": dict(tree=4),
    "ar": dict(),
}
DEFAULT_STRATEGIES = "dllm,path,adaptive,path+adaptive,tree,ar"

_REPO = Path(__file__).resolve().parents[2]


def ar_click_options() -> list:
    """The options `spiffy bench` adds for ``--mode ar`` (see spiffy/cli/bench.py AR_OPTIONS)."""
    return [
        click.option("--target", "ar_target", default=None,
                     help="[ar] AR target checkpoint [default: models/spiffy-ar-ref]."),
        click.option("--ar-drafter", default=None,
                     help="[ar] Small AR drafter for the classic baseline [default: models/spiffy-ar-draft]."),
        click.option("--strategies", default=DEFAULT_STRATEGIES, show_default=True,
                     help="[ar] Comma-separated: dllm, path, adaptive, path+adaptive, tree, ar."),
        click.option("--draft-length", "draft_length", type=int, default=8, show_default=True,
                     help="[ar] Draft length γ (fixed-length strategies; the AR drafter uses --ar-draft-length)."),
        click.option("--ar-draft-length", type=int, default=4, show_default=True,
                     help="[ar] Draft length of the classic AR drafter."),
        click.option("--tree-branches", type=int, default=4, show_default=True, help="[ar] Branches of the tree."),
        click.option("--drafter-steps", type=int, default=1, show_default=True,
                     help="[ar] Denoising steps of the dLLM drafter."),
        click.option("--min-draft", type=int, default=20, show_default=True, help="[ar] Adaptive γ lower bound."),
        click.option("--max-draft", type=int, default=30, show_default=True, help="[ar] Adaptive γ upper bound."),
        click.option("--extra-masks", type=int, default=0, show_default=True,
                     help="[ar] Masks appended after the drafted slots (context only, never drafted)."),
        click.option("--ngram", default=None, help="[ar] n-gram artifact [default: models/ngram/ref-3gram.npz]."),
    ]


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def run_ar_bench(ar_target=None, ar_drafter=None, strategies=DEFAULT_STRATEGIES, draft_length=8,
                 ar_draft_length=4, tree_branches=4, drafter_steps=1, min_draft=20, max_draft=30, ngram=None,
                 extra_masks=0, model=None, datasets=("gsm8k", "humaneval"), limit=10, data_dir=None, gen_length=256,
                 out_dir=None, threads=None, raw=False, device="cpu", dtype="auto", seed=0, temperature=0.0,
                 echo=True, **_ignored) -> dict:
    """Run the AR-verifier benchmark; returns the result dict (also written to ``out_dir``)."""
    import torch

    from ..ar import ARDecodeConfig, generate_ar, hf_generate
    from ..ar.ngram import DEFAULT_NGRAM_PATH, NGramModel
    from ..ar.pair import load_drafter_model, make_drafter
    from ..ar.target import load_causal_lm
    from ..backends import load_backend
    from ..datasets import load_prompts
    from ..errors import ConfigError
    from .machine import machine_info

    say = (lambda s: click.echo(s, err=True)) if echo else (lambda s: None)
    if threads:
        torch.set_num_threads(threads)
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown:
        raise ConfigError(f"unknown strategies {unknown}: choose from {sorted(STRATEGIES)}")
    if temperature:
        raise ConfigError("the AR benchmark measures greedy decoding (identical-output rate); use --temperature 0")
    tpath = ar_target or str(_REPO / "models" / "spiffy-ar-ref")
    target = load_causal_lm(tpath, device=device, dtype=dtype)
    dllm = make_drafter(load_backend(model, device=device, dtype=dtype), target, steps=drafter_steps,
                        extra_masks=extra_masks)
    ar = None
    if "ar" in names:
        apath = ar_drafter or str(_REPO / "models" / "spiffy-ar-draft")
        ar = make_drafter(load_drafter_model(apath, device, dtype), target)
    ng = None
    if any(STRATEGIES[s].get("path_search") for s in names):
        ng = NGramModel.load(ngram or DEFAULT_NGRAM_PATH, target.tokenizer)
    base = ARDecodeConfig(max_new_tokens=gen_length, draft_length=draft_length, drafter_steps=drafter_steps,
                          min_draft=min_draft, max_draft=max_draft, seed=seed, tree=0).check()
    cfgs = {}
    for s in names:
        kw = dict(STRATEGIES[s])
        if s == "tree":
            kw["tree"] = tree_branches
        if s == "ar":
            kw["draft_length"] = ar_draft_length
        cfgs[s] = ARDecodeConfig(**{**base.to_dict(), **kw}).check()
    sets = {name: load_prompts(name, limit, data_dir) for name in datasets}

    # warm-up (first calls pay one-off costs)
    w = target.encode_prompt("warm up", chat=not raw)
    generate_ar(target, None, w, max_new_tokens=4)
    generate_ar(target, dllm, w, max_new_tokens=4, draft_length=2)

    rows, per_prompt = [], []
    for dname, prompts in sets.items():
        say(f"[{dname}] {len(prompts)} prompts")
        acc = {s: [] for s in ["target"] + names}
        for i, row in enumerate(prompts):
            ids = target.encode_prompt(row["prompt"], chat=not raw)
            t0 = time.perf_counter()
            ref = hf_generate(target, ids, gen_length)
            hf_s = time.perf_counter() - t0
            plain = generate_ar(target, None, ids, base)
            rec = {"dataset": dname, "id": row["id"], "prompt_tokens": len(ids), "hf_generate_s": hf_s,
                   "runs": {"target": _summ(plain, ref, plain.wall_s)}}
            acc["target"].append(rec["runs"]["target"])
            for s in names:
                r = generate_ar(target, ar if s == "ar" else dllm, ids, cfgs[s], ngram=ng)
                rec["runs"][s] = _summ(r, ref, plain.wall_s)
                acc[s].append(rec["runs"][s])
            per_prompt.append(rec)
            say(f"  {i + 1}/{len(prompts)} {row['id']}: " + " ".join(
                f"{s}={rec['runs'][s]['mean_accepted']:.2f}/{rec['runs'][s]['speedup']:.2f}x" for s in names))
        for s, runs in acc.items():
            rows.append(_aggregate(dname, s, runs))
    result = {"machine": machine_info(device), "target": target.name, "drafter": dllm.name,
              "ar_drafter": ar.name if ar is not None else None,
              "args": {"datasets": list(datasets), "limit": limit, "gen_length": gen_length,
                       "draft_length": draft_length, "ar_draft_length": ar_draft_length,
                       "tree_branches": tree_branches, "drafter_steps": drafter_steps, "extra_masks": extra_masks,
                       "adaptive_bounds": [min_draft, max_draft], "threads": torch.get_num_threads(),
                       "strategies": names, "configs": {s: c.to_dict() for s, c in cfgs.items()}},
              "rows": rows, "prompts": per_prompt}
    out = Path(out_dir) if out_dir else Path("runs") / f"bench-ar-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = write_ar_outputs(result, out)
    if echo:
        click.echo(markdown_table(result))
        click.echo(json.dumps({"outputs": paths}))
    result["outputs"] = paths
    return result


def _summ(r, ref, plain_s) -> dict:
    return {"tokens": len(r.token_ids), "identical": r.token_ids == ref, "target_calls": r.target_calls,
            "drafter_calls": r.drafter_calls, "rounds": r.rounds, "mean_accepted": r.mean_accepted,
            "wall_s": r.wall_s, "target_s": r.target_s, "drafter_s": r.drafter_s,
            "speedup": plain_s / r.wall_s if r.wall_s > 0 else 0.0}


def _aggregate(dataset, strategy, runs) -> dict:
    tokens = sum(x["tokens"] for x in runs)
    rounds = sum(x["rounds"] for x in runs)
    wall = sum(x["wall_s"] for x in runs)
    return {"dataset": dataset, "strategy": strategy, "prompts": len(runs), "tokens": tokens,
            "mean_accepted": tokens / max(1, rounds),
            "target_calls": _mean(x["target_calls"] for x in runs),
            "drafter_calls": _mean(x["drafter_calls"] for x in runs),
            "tokens_per_s": tokens / wall if wall > 0 else 0.0, "wall_s": wall,
            "target_s": sum(x["target_s"] for x in runs), "drafter_s": sum(x["drafter_s"] for x in runs),
            "identical_rate": _mean(1.0 if x["identical"] else 0.0 for x in runs)}


def markdown_table(result: dict) -> str:
    rows = result["rows"]
    plain = {(r["dataset"]): r for r in rows if r["strategy"] == "target"}
    lines = ["| dataset | strategy | tokens/target call | target calls | drafter calls | tokens/s | "
             "wall-clock speedup vs plain | identical |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = plain.get(r["dataset"])
        sp = p["wall_s"] / r["wall_s"] if p and r["wall_s"] > 0 else 0.0
        lines.append(f"| {r['dataset']} | {r['strategy']} | {r['mean_accepted']:.2f} | {r['target_calls']:.1f} | "
                     f"{r['drafter_calls']:.1f} | {r['tokens_per_s']:.1f} | {sp:.2f}x | "
                     f"{100 * r['identical_rate']:.0f}% |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    rows = result["rows"]
    dsets = sorted({r["dataset"] for r in rows})
    strats = [s for s in ["target"] + result["args"]["strategies"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(dsets))
    for k, d in enumerate(dsets):
        by = {r["strategy"]: r for r in rows if r["dataset"] == d}
        plain = by.get("target")
        xs = [i + k * width for i in range(len(strats))]
        axes[0].bar(xs, [by[s]["mean_accepted"] if s in by else 0 for s in strats], width, label=d)
        axes[1].bar(xs, [plain["wall_s"] / by[s]["wall_s"] if s in by and plain and by[s]["wall_s"] else 0
                         for s in strats], width, label=d)
    for ax, title in zip(axes, ["tokens per target call", "wall-clock speedup vs plain target"]):
        ax.set_xticks([i + width * (len(dsets) - 1) / 2 for i in range(len(strats))])
        ax.set_xticklabels(strats, rotation=30, ha="right")
        ax.set_title(title)
        ax.legend()
    axes[1].axhline(1.0, color="gray", lw=0.8, ls="--")
    fig.suptitle(f"AR-verifier mode: {result['target']} drafted by {result['drafter']} (greedy, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_ar_outputs(result: dict, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    j = out_dir / "ar_bench.json"
    j.write_text(json.dumps(result, indent=1))
    m = out_dir / "ar_bench.md"
    m.write_text(markdown_table(result) + "\n")
    p = plot(result, out_dir / "ar_bench.png")
    return {"json": str(j), "markdown": str(m), "plot": str(p) if p else None}
