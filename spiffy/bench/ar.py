"""`spiffy bench --mode ar`: drafters for an AR target, side by side with the target's own decoders.

For each prompt, in one run on one machine, the target's plain greedy decoding in this project (the
wall-clock baseline, row ``plain``), its transformers ``generate(do_sample=False)`` (the reference
output, row ``hf_generate``), transformers' own prompt-lookup decoding (row ``hf_prompt_lookup``, the
best of the ``--hf-lookup-tokens`` settings per dataset; each setting also gets a row) and every
strategy of this project decode the same prompt back to back. Strategies:

- ``ngram``, ``ngram+nogate``, ``ngram+adaptive``, ``ngram+tree``, ``ngram+path``: model-free prompt
  lookup (:mod:`spiffy.ar.lookup`) as a chain (with and without the cost gate of
  :mod:`spiffy.ar.gate`), with adaptive length, as a trie of candidates, with DiffuSpec's path search
  over the candidates' lattice;
- ``dllm``, ``path``, ``adaptive``, ``path+adaptive``, ``tree``: a diffusion drafter sharing the
  target's tokenizer (SpecDiff, DiffuSpec, D²SD);
- ``ar``: a small AR drafter (classic speculative decoding);
- ``diffusion``, ``diffusion+tree``, ``diffusion+adaptive``, ``diffusion+redraft``: a block drafter that
  reads the target's hidden states (:mod:`spiffy.ar.block_drafter`, DFlash-style) as a chain, a best-first
  tree of ``--tree-nodes`` nodes from its one pass (DDTree), with adaptive length, and with re-drafted
  branches (D²SD-style, for comparison).

Reported per strategy and dataset: tokens per target call (accepted drafts + the target's own token),
target and drafter calls, tokens/s, the median and total wall-clock ratio against ``plain``, the rate
of outputs identical to ``hf_generate``, and where the time went (target forwards, drafter, the rest).
Writes ``bench.json`` (``rows``: one per strategy and dataset), ``bench.md`` and ``bench.png``.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

from ..resources import resource_dir

# strategy -> (drafter kind, ARDecodeConfig overrides)
STRATEGIES = {
    "ngram": ("ngram", dict()),
    "ngram+nogate": ("ngram", dict(gate=0.0)),
    "ngram+adaptive": ("ngram", dict(adaptive=True)),
    "ngram+tree": ("ngram", dict(tree=4)),
    "ngram+path": ("ngram", dict(path_search=True)),
    "dllm": ("dllm", dict()),
    "path": ("dllm", dict(path_search=True)),
    "adaptive": ("dllm", dict(adaptive=True)),
    "path+adaptive": ("dllm", dict(path_search=True, adaptive=True)),
    "tree": ("dllm", dict(tree=4)),
    "ar": ("ar", dict()),
    "diffusion": ("block", dict()),
    "diffusion+tree": ("block", dict(tree_nodes=1)),
    "diffusion+adaptive": ("block", dict(adaptive=True)),
    "diffusion+redraft": ("block", dict(tree=1)),
    "hf_prompt_lookup": ("hf", dict()),
}
BLOCK_DEFAULT = "diffusion,diffusion+tree,diffusion+adaptive,diffusion+redraft"
DLLM_DEFAULT = "dllm,path,adaptive,path+adaptive,tree,ar"
LOOKUP_DEFAULT = "ngram,ngram+nogate,ngram+adaptive,ngram+tree,ngram+path,hf_prompt_lookup"

_MODELS = resource_dir("models")


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


class _ForwardCounter:
    """Counts forwards of a transformers model (for transformers' own decoders, which do not report them)."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.n += 1


def _hf_run(target, counter, ids, gen_length, lookup_tokens=None) -> dict:
    """transformers ``generate(do_sample=False)``, plain or with prompt lookup, timed and its forwards counted."""
    from ..ar.decode import hf_generate

    c0 = counter.n
    t0 = time.perf_counter()
    toks = hf_generate(target, ids, gen_length, prompt_lookup_num_tokens=lookup_tokens)
    wall = time.perf_counter() - t0
    calls = counter.n - c0
    # transformers' prefill already yields the first token, so every forward is a round
    return {"tokens": toks, "wall_s": wall, "target_calls": calls, "rounds": max(1, calls)}


def default_block_drafter(target_path) -> Optional[str]:
    """The bundled block drafter trained for a named target, if this install has one."""
    from ..backends.loader import bundled_model
    from ..named_models import spec_of

    spec = spec_of(target_path) if target_path else None
    name = getattr(spec, "block_drafter", None)
    return name if name and bundled_model(name) is not None else None


def _load_drafters(kinds, target, model, ar_drafter, device, dtype, drafter_steps, extra_masks, block_drafter=None):
    from ..ar.pair import load_drafter_model, make_drafter
    from ..backends import load_backend

    out = {}
    if "ngram" in kinds:
        out["ngram"] = make_drafter("ngram", target)
    if "dllm" in kinds:
        out["dllm"] = make_drafter(load_backend(model, device=device, dtype=dtype), target, steps=drafter_steps,
                                   extra_masks=extra_masks)
    if "ar" in kinds:
        apath = ar_drafter or str(_MODELS / "spiffy-ar-draft")
        out["ar"] = make_drafter(load_drafter_model(apath, device, dtype), target)
    if "block" in kinds:
        out["block"] = make_drafter(load_drafter_model(block_drafter, device, dtype), target)
    return out


def run_ar_bench(ar_target=None, ar_drafter=None, strategies=None, draft_length=8, ar_draft_length=4,
                 tree_branches=4, drafter_steps=1, min_draft=20, max_draft=30, lookup_min_draft=2,
                 lookup_max_draft=16, hf_lookup_tokens="3,10", ngram=None, extra_masks=0, model=None,
                 block_drafter=None, tree_nodes=32, block_min_draft=4,
                 datasets=("gsm8k", "humaneval"), limit=10, data_dir=None, gen_length=256, out_dir=None, threads=None,
                 raw=False, device="cpu", dtype="auto", seed=0, temperature=0.0, echo=True, **_ignored) -> dict:
    """Run the AR-verifier benchmark; returns the result dict (also written to ``out_dir``)."""
    import torch

    from ..ar import ARDecodeConfig, generate_ar
    from ..ar.ngram import NGramModel
    from ..ar.pair import default_drafter_name
    from ..ar.target import load_causal_lm
    from ..datasets import load_prompts
    from ..errors import ConfigError
    from ..parse import int_list
    from .machine import machine_info

    say = (lambda s: print(s, file=sys.stderr, flush=True)) if echo else (lambda s: None)
    if threads:
        torch.set_num_threads(threads)
    if temperature:
        raise ConfigError("the AR benchmark measures greedy decoding (identical-output rate); use --temperature 0")
    block_drafter = block_drafter or default_block_drafter(ar_target)
    if strategies is None:
        named_default = default_drafter_name(ar_target) if ar_target else None
        strategies = LOOKUP_DEFAULT if (named_default in ("ngram", block_drafter) and model is None) else DLLM_DEFAULT
        if block_drafter:
            strategies = BLOCK_DEFAULT + "," + strategies
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        raise ConfigError(f"unknown strategies {unknown or strategies!r}: choose from {', '.join(STRATEGIES)}")
    if any(STRATEGIES[s][0] == "block" for s in names) and not block_drafter:
        raise ConfigError("the diffusion strategies need a block drafter trained for the target: pass --block-drafter "
                          "PATH_OR_NAME (none is bundled for this target)")
    if tree_nodes < 1 or block_min_draft < 1:
        raise ConfigError(f"--tree-nodes and --block-min-draft must be >= 1 (got {tree_nodes}, {block_min_draft})")
    hf_ks = int_list(hf_lookup_tokens, "--hf-lookup-tokens") if "hf_prompt_lookup" in names else []
    sets = {name: load_prompts(name, limit, data_dir) for name in datasets}   # bad files fail before any model loads
    tpath = ar_target or str(_MODELS / "spiffy-ar-ref")
    target = load_causal_lm(tpath, device=device, dtype=dtype)
    drafters = _load_drafters({STRATEGIES[s][0] for s in names}, target, model, ar_drafter, device, dtype,
                              drafter_steps, extra_masks, block_drafter)
    ng = None
    if any(STRATEGIES[s][1].get("path_search") for s in names):
        ng = NGramModel.for_tokenizer(target.tokenizer, ngram)
    base = ARDecodeConfig(max_new_tokens=gen_length, draft_length=draft_length, drafter_steps=drafter_steps,
                          min_draft=min_draft, max_draft=max_draft, seed=seed, tree=0).check()
    cfgs = {}
    for s in names:
        kind, kw = STRATEGIES[s]
        if kind == "hf":
            continue
        kw = dict(kw)
        if kw.get("tree"):
            kw["tree"] = tree_branches
        if kind == "ar":
            kw["draft_length"] = ar_draft_length
        if kind == "ngram" and kw.get("adaptive"):
            kw.update(min_draft=lookup_min_draft, max_draft=lookup_max_draft)
        if kind == "block":
            top = drafters["block"].max_draft
            kw["draft_length"] = top   # the whole block: one drafter forward fills it anyway
            if kw.get("tree_nodes"):
                kw["tree_nodes"] = tree_nodes
            if kw.get("adaptive"):
                kw.update(min_draft=min(block_min_draft, top), max_draft=top)
        cfgs[s] = ARDecodeConfig(**{**base.to_dict(), **kw}).check()
    counter = _ForwardCounter(target.model)

    # warm-up (first calls pay one-off costs)
    w = target.encode_prompt("warm up", chat=not raw)
    generate_ar(target, None, w, max_new_tokens=4)
    for d in drafters.values():
        generate_ar(target, d, w, max_new_tokens=4, draft_length=2)
    _hf_run(target, counter, w, 4, hf_ks[0] if hf_ks else None)

    hf_rows = [f"hf_prompt_lookup[k={k}]" for k in hf_ks]
    ours = [s for s in names if s != "hf_prompt_lookup"]
    rows, per_prompt = [], []
    for dname, prompts in sets.items():
        say(f"[{dname}] {len(prompts)} prompts")
        acc = {s: [] for s in ["plain", "hf_generate"] + hf_rows + ours}
        for i, row in enumerate(prompts):
            ids = target.encode_prompt(row["prompt"], chat=not raw)
            hf = _hf_run(target, counter, ids, gen_length)
            ref = hf["tokens"]
            plain = generate_ar(target, None, ids, base)
            rec = {"dataset": dname, "id": row["id"], "prompt_tokens": len(ids), "runs": {}}
            rec["runs"]["plain"] = _summ(plain, ref, plain.wall_s)
            rec["runs"]["hf_generate"] = _summ_hf(hf, ref, plain.wall_s)
            for k, rname in zip(hf_ks, hf_rows):
                rec["runs"][rname] = _summ_hf(_hf_run(target, counter, ids, gen_length, k), ref, plain.wall_s)
            for s in ours:
                r = generate_ar(target, drafters[STRATEGIES[s][0]], ids, cfgs[s], ngram=ng)
                rec["runs"][s] = _summ(r, ref, plain.wall_s)
            for s, run in rec["runs"].items():
                acc[s].append(run)
            per_prompt.append(rec)
            say(f"  {i + 1}/{len(prompts)} {row['id']}: " + " ".join(
                f"{s}={run['tokens_per_target_call']:.2f}/{run['speedup']:.2f}x"
                for s, run in rec["runs"].items() if s != "plain"))
        drows = [_aggregate(dname, s, runs) for s, runs in acc.items()]
        if hf_rows:   # transformers' prompt lookup at its best setting on this dataset
            best = max((r for r in drows if r["strategy"] in hf_rows), key=lambda r: r["wall_ratio_median"])
            drows.append({**best, "strategy": "hf_prompt_lookup", "setting": best["strategy"]})
        rows += drows
    counter.handle.remove()
    result = {"machine": machine_info(device), "target": target.name,
              "drafters": {k: d.name for k, d in drafters.items()},
              "args": {"datasets": list(datasets), "limit": limit, "gen_length": gen_length,
                       "draft_length": draft_length, "ar_draft_length": ar_draft_length,
                       "tree_branches": tree_branches, "tree_nodes": tree_nodes, "drafter_steps": drafter_steps,
                       "extra_masks": extra_masks, "block_min_draft": block_min_draft,
                       "adaptive_bounds": [min_draft, max_draft],
                       "lookup_adaptive_bounds": [lookup_min_draft, lookup_max_draft], "hf_lookup_tokens": hf_ks,
                       "threads": torch.get_num_threads(), "strategies": names,
                       "configs": {s: c.to_dict() for s, c in cfgs.items()}},
              "rows": rows, "prompts": per_prompt}
    out = Path(out_dir) if out_dir else Path("runs") / f"bench-ar-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = write_ar_outputs(result, out)
    if echo:
        print(markdown_table(result))
        print(json.dumps({"outputs": paths}))
    result["outputs"] = paths
    return result


def _summ(r, ref, plain_s) -> dict:
    return {"tokens": len(r.token_ids), "identical": r.token_ids == ref, "target_calls": r.target_calls,
            "drafter_calls": r.drafter_calls, "rounds": r.rounds,
            "tokens_per_target_call": len(r.token_ids) / max(1, r.rounds),
            "accepted": list(r.accepted), "wall_s": r.wall_s, "target_s": r.target_s, "drafter_s": r.drafter_s,
            "speedup": plain_s / r.wall_s if r.wall_s > 0 else 0.0}


def _summ_hf(h, ref, plain_s) -> dict:
    return {"tokens": len(h["tokens"]), "identical": h["tokens"] == ref, "target_calls": h["target_calls"],
            "drafter_calls": 0, "rounds": h["rounds"], "tokens_per_target_call": len(h["tokens"]) / h["rounds"],
            "accepted": [], "wall_s": h["wall_s"], "target_s": None, "drafter_s": 0.0,
            "speedup": plain_s / h["wall_s"] if h["wall_s"] > 0 else 0.0}


def _aggregate(dataset, strategy, runs) -> dict:
    tokens = sum(x["tokens"] for x in runs)
    rounds = sum(x["rounds"] for x in runs)
    wall = sum(x["wall_s"] for x in runs)
    timed = all(x["target_s"] is not None for x in runs)
    target_s = sum(x["target_s"] for x in runs) if timed else None
    drafter_s = sum(x["drafter_s"] for x in runs)
    by_pos: list = []   # rounds that accepted at least i+1 draft tokens
    for x in runs:
        for a in x["accepted"]:
            for i in range(a):
                if i == len(by_pos):
                    by_pos.append(0)
                by_pos[i] += 1
    n_rounds = sum(len(x["accepted"]) for x in runs)
    return {"dataset": dataset, "strategy": strategy, "prompts": len(runs), "tokens": tokens,
            "tokens_per_target_call": tokens / max(1, rounds),
            "target_calls": _mean(x["target_calls"] for x in runs),
            "drafter_calls": _mean(x["drafter_calls"] for x in runs),
            "tokens_per_s": tokens / wall if wall > 0 else 0.0, "wall_s": wall,
            "wall_ratio_median": statistics.median(x["speedup"] for x in runs) if runs else 0.0,
            "target_s": target_s, "drafter_s": drafter_s,
            "other_s": (wall - target_s - drafter_s) if timed else None,
            "accepted_at_position": [c / n_rounds for c in by_pos] if n_rounds else [],
            "identical_rate": _mean(1.0 if x["identical"] else 0.0 for x in runs)}


def markdown_table(result: dict) -> str:
    rows = result["rows"]
    plain = {r["dataset"]: r for r in rows if r["strategy"] == "plain"}
    lines = ["| dataset | strategy | tokens/target call | target calls | drafter calls | tokens/s | "
             "wall-clock vs plain (median) | (total) | time: target / drafter / rest | identical |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = plain.get(r["dataset"])
        total = p["wall_s"] / r["wall_s"] if p and r["wall_s"] > 0 else 0.0
        name = r["strategy"] + (f" ({r['setting']})" if r.get("setting") else "")
        split = "—" if r["target_s"] is None else \
            f"{r['target_s']:.1f} / {r['drafter_s']:.1f} / {r['other_s']:.1f} s"
        lines.append(f"| {r['dataset']} | {name} | {r['tokens_per_target_call']:.2f} | {r['target_calls']:.1f} | "
                     f"{r['drafter_calls']:.1f} | {r['tokens_per_s']:.1f} | {r['wall_ratio_median']:.2f}x | "
                     f"{total:.2f}x | {split} | {100 * r['identical_rate']:.0f}% |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    rows = [r for r in result["rows"] if not r["strategy"].startswith("hf_prompt_lookup[")]
    dsets = sorted({r["dataset"] for r in rows})
    strats = list(dict.fromkeys(r["strategy"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / max(1, len(dsets))
    for k, d in enumerate(dsets):
        by = {r["strategy"]: r for r in rows if r["dataset"] == d}
        xs = [i + k * width for i in range(len(strats))]
        axes[0].bar(xs, [by[s]["tokens_per_target_call"] if s in by else 0 for s in strats], width, label=d)
        axes[1].bar(xs, [by[s]["wall_ratio_median"] if s in by else 0 for s in strats], width, label=d)
    for ax, title in zip(axes, ["tokens per target call", "wall-clock speed-up vs plain (median)"]):
        ax.set_xticks([i + width * (len(dsets) - 1) / 2 for i in range(len(strats))])
        ax.set_xticklabels(strats, rotation=30, ha="right")
        ax.set_title(title)
        ax.legend()
    axes[1].axhline(1.0, color="gray", lw=0.8, ls="--")
    fig.suptitle(f"AR-verifier mode: target {result['target']} (greedy, {result['machine'].get('device', 'cpu')}, "
                 f"{result['args']['threads']} thread(s))")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_ar_outputs(result: dict, out_dir: Path) -> dict:
    """bench.json, bench.md and bench.png, each written atomically (never half a file)."""
    from ..atomic import atomic_write_json, atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    j = atomic_write_json(out_dir / "bench.json", result)
    m = atomic_write_text(out_dir / "bench.md", markdown_table(result) + "\n")
    p = plot(result, out_dir / "bench.png")
    return {"json": str(j), "markdown": str(m), "plot": str(p) if p else None}
