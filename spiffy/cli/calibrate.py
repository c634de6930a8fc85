"""`spiffy calibrate`: choose Spiffy's draft graphs offline from baseline traces."""
from __future__ import annotations

from pathlib import Path

import click

from . import main
from ..parse import int_list
from .parallel import joined, parallel_options
from .sample import config_from, decode_options


def _pairs(text: str) -> list:
    try:
        pairs = [tuple(int(x) for x in p.split(":")) for p in text.split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter(f"--prune takes D:keep pairs like 10:3, got {text!r}") from None
    if any(len(p) != 2 or p[0] < 1 or p[1] < 1 for p in pairs):
        raise click.BadParameter(f"--prune takes D:keep pairs of positive integers like 10:3, got {text!r}")
    return pairs


def calibration_decode_options(f):
    """The sampler's options, generated from GenerationConfig (as `spiffy sample`'s), with the paper's
    generation length (256) as the default."""
    f = decode_options(f)
    for p in f.__click_params__:
        if p.name == "gen_length":
            p.default = 256
    return f


@main.command()
@click.option("--model", default=None, help="Checkpoint directory or hub id [default: the bundled reference dLLM].")
@click.option("--dataset", required=True,
              help="gsm8k-train, mbpp-train, gsm8k, humaneval, mbpp, or a FILE (JSONL with 'prompt', or one per line). "
                   "Comma-separate several to mix them.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="Calibration prompts (per dataset).")
@click.option("--budgets", default="3,5,8,10", show_default=True, help="Graph budgets D to calibrate.")
@click.option("--objective", type=click.Choice(["saved", "degree1", "frequency"]), default="saved", show_default=True,
              help="Selection objective written to the artifacts (all three are evaluated).")
@click.option("--search", type=click.Choice(["greedy", "exact"]), default="greedy", show_default=True)
@click.option("--token-ranks", default=4, show_default=True, help="Token ranks recorded per position.")
@click.option("--heldout", default="", help="Comma-separated held-out sets to evaluate on (e.g. gsm8k,humaneval).")
@click.option("--heldout-limit", default=24, show_default=True, type=click.IntRange(min=1))
@click.option("--prune", "prune_spec", default="", help="Also replay runtime pruning on the held-out traces: "
              "comma-separated D:keep pairs, e.g. 10:3 (the calibrated D graph, best `keep` nodes per round).")
@calibration_decode_options
@click.option("--data-dir", default=None, help="Data directory [default: $SPIFFY_DATA or ../shared/data].")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Calibration root to write the set under [default: $SPIFFY_CACHE/calibration, i.e. "
                   "~/.cache/spiffy/calibration, which the decoder searches before the shipped sets].")
@click.option("--force", is_flag=True, help="Replace an existing set for the same model and settings.")
@click.option("--plot", is_flag=True, help="Draw the selected graphs and NFE reduction vs budget (PNG).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--raw", is_flag=True, help="Do not apply the chat template.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads per process [default: torch's; torchrun sets 1 per rank].")
@parallel_options
def calibrate(model, dataset, limit, budgets, objective, search, token_ranks, heldout, heldout_limit, prune_spec,
              data_dir, out_dir, force, plot, device, dtype, raw, threads, resume, shard_size, dist_timeout, **kw):
    """Trace the baseline on a prompt set, select draft graphs per budget, and write the set
    OUT/<model>/<setting>_g<gen>_<cache>/ (D<k>.json, counts.json, report.json, prompts.jsonl) as one unit.

    Data-parallel: `torchrun --nproc-per-node N -m spiffy calibrate ...` traces the prompts on N ranks
    (each on its own device); rank 0 selects and writes, and the set equals the single-process one."""
    from ..backends import load_backend
    from ..calibration.pipeline import CalibrationConfig, calibrate as run
    from ..datasets import load_prompts
    from ..memory import pin_mmap_threshold
    from ..speculative.config import MAX_BUDGET

    pin_mmap_threshold()   # long decode loops (spiffy.memory)

    if out_dir is None:
        from ..speculative.calibrated import user_calibration_dir

        out_dir = str(user_calibration_dir())
    if threads:
        import torch

        torch.set_num_threads(threads)
    with joined(device, resume, shard_size, dist_timeout) as sharding:
        cal = CalibrationConfig(int_list(budgets, "--budgets", 1, MAX_BUDGET), objective, search, token_ranks,
                                prune=_pairs(prune_spec))
        cfg = config_from(kw)
        rows = []
        for name in dataset.split(","):
            rows += load_prompts(name.strip(), limit, data_dir)
        held = {h.strip(): load_prompts(h.strip(), heldout_limit, data_dir) for h in heldout.split(",") if h.strip()}
        backend = load_backend(model, device=sharding.world.device(device), dtype=dtype)
        done = run(backend, rows, cfg, cal, out_dir, prompt_set=f"{dataset}[:{limit}]", heldout=held, chat=not raw,
                   force=force, plot=plot, progress=True, sharding=sharding)
    if done is None:   # another rank of a torchrun job: rank 0 reports
        return
    rep = done.report
    folder = Path(out_dir) / rep["folder"]
    click.echo(markdown_summary(rep))
    click.echo(f"wrote {folder}")


def markdown_summary(rep: dict) -> str:
    lines = [f"calibration: {rep['model']} / {rep['setting']} on {rep['prompt_set']} ({rep['size']} prompts), "
             f"objective {rep['objective']}", ""]
    objs = list(next(iter(rep["graphs"].values())).keys())
    lines.append("| D | " + " | ".join(f"{o} (calib)" for o in objs) + " |")
    lines.append("|---|" + "---|" * len(objs))
    for D in rep["budgets"]:
        g = rep["graphs"][str(D)]
        lines.append(f"| {D} | " + " | ".join(f"{g[o]['calibration']['nfe_reduction']:.2f}x" for o in objs) + " |")
    for name, h in rep["heldout"].items():
        cols = list(next(iter(h["by_budget"].values())).keys())
        lines += ["", f"held-out {name} ({h['size']} prompts, {h['baseline_calls']} baseline calls): NFE reduction", "",
                  "| D | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for D in rep["budgets"]:
            r = h["by_budget"][str(D)]
            lines.append(f"| {D} | " + " | ".join(f"{r[c]['nfe_reduction']:.2f}x" for c in cols) + " |")
        for key, r in h.get("pruned", {}).items():
            lines.append(f"\nruntime pruning {key}: {r['nfe_reduction']:.2f}x")
    return "\n".join(lines)
