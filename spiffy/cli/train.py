"""`spiffy train`: train a reference model from a JSON recipe (models/recipes/*.json)."""
import json
from pathlib import Path

import click


@click.command("train")
@click.option("--recipe", required=True, type=click.Path(exists=True, dir_okay=False), help="recipe JSON")
@click.option("--data-dir", default=None, help="data directory (default: $SPIFFY_DATA or ../shared/data)")
@click.option("--out", default=None, help="output checkpoint directory (default: models/<recipe name>)")
@click.option("--max-minutes", type=float, default=None,
              help="wall-clock budget for the whole run, data preparation included; the stages shrink to fit")
@click.option("--device", default="auto", help="auto | cpu | cuda | cuda:N (cuda uses bf16 autocast and the "
                                              "recipe's 'cuda' overrides)")
@click.option("--variant", type=click.Choice(["auto", "base", "cuda"]), default="auto", show_default=True,
              help="which sizes to train: auto = the recipe's 'cuda' section on a GPU, the base recipe on a "
                   "CPU; 'cuda' on a CPU dry-runs the GPU plan")
@click.option("--log", "log_path", default=None, help="also append JSON log lines to this file")
@click.option("--resume-from", default=None, type=click.Path(exists=True, file_okay=False),
              help="checkpoint directory of an earlier run of this recipe (with its training.json)")
@click.option("--start-stage", default=None, help="skip the recipe's stages before this one (needs --resume-from)")
@click.option("--restart", is_flag=True, help="adapter recipes (kind dllm-adapt): discard the saved training "
                                             "state in $SPIFFY_CACHE/train/<name> instead of continuing it")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="adapter recipes: stop this run at this step (the state is saved; the next run continues)")
def train_cmd(recipe, data_dir, out, max_minutes, device, variant, log_path, resume_from, start_stage, restart,
              max_steps):
    """Train the model a RECIPE describes (tokenizer, pretraining, SFT) and save it with safetensors."""
    from ..devices import check_device
    from ..errors import SpiffyError
    from spiffy_train.loop import train
    from .sample import fail

    try:
        if device != "auto":
            check_device(device)
        kind = json.loads(Path(recipe).read_text()).get("kind")
        if kind in ("dllm-adapt", "block-drafter"):
            return _adapt(recipe, data_dir, out, max_minutes, device, variant, log_path, restart, max_steps)
        summary = train(recipe, data_dir=data_dir, out=out, max_minutes=max_minutes, device=device,
                        log_path=log_path, resume_from=resume_from, start_stage=start_stage, variant=variant)
    except SpiffyError as e:
        fail(str(e))
    click.echo(f"saved {summary['name']} ({summary['params']:,} params) in {summary['wall_min']} min")


def _adapt(recipe_path, data_dir, out, max_minutes, device, variant, log_path, restart, max_steps):
    """Recipe kinds that start from a named model: ``dllm-adapt`` (a LoRA adapter that turns a causal LM into a
    diffusion LM) and ``block-drafter`` (a drafter that reads an AR target's hidden states)."""
    import torch

    from ..datasets import resolve_data_dir
    from spiffy_train.adapt import train_adapter
    from spiffy_train.loop import Logger, load_recipe, resolve_device

    device = resolve_device(device)
    r = load_recipe(recipe_path, device, variant)
    if torch.device(device).type == "cpu" and r.get("threads"):
        torch.set_num_threads(int(r["threads"]))
    logger = Logger(Path(log_path) if log_path else None)
    if r.get("kind") == "block-drafter":
        from spiffy_train.block_drafter import train_block_drafter

        s = train_block_drafter(r, resolve_data_dir(data_dir), Path(out or Path("models") / r["name"]), device,
                                max_minutes, restart, log=lambda m: logger(message=m), max_steps=max_steps)
        last = s["curve"][-1]
        click.echo(f"saved {s['name']}: step {s['step']}, {s['train_hours']} h trained, held-out "
                   f"{last['tokens_per_call']} tokens per target call, {s['drafter_mb']} MB")
        return
    s = train_adapter(r, resolve_data_dir(data_dir), Path(out or Path("models") / r["name"]), device, max_minutes,
                      restart, log=lambda m: logger(message=m) if isinstance(m, str) else logger(**m),
                      max_steps=max_steps)
    last = s["curve"][-1]
    click.echo(f"saved {s['name']}: step {s['step']}, {s['tokens']:,} tokens, {s['train_hours']} h trained, "
               f"held-out masked loss {last['loss']} (acc {last['masked_acc']}), adapter {s['adapter_mb']} MB")


from . import main  # noqa: E402

main.add_command(train_cmd)
