"""`spiffy train`: train a reference model from a JSON recipe (models/recipes/*.json)."""
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
def train_cmd(recipe, data_dir, out, max_minutes, device, variant, log_path, resume_from, start_stage):
    """Train the model a RECIPE describes (tokenizer, pretraining, SFT) and save it with safetensors."""
    from ..devices import check_device
    from ..errors import SpiffyError
    from ..train.loop import train
    from .sample import fail

    try:
        if device != "auto":
            check_device(device)
        summary = train(recipe, data_dir=data_dir, out=out, max_minutes=max_minutes, device=device,
                        log_path=log_path, resume_from=resume_from, start_stage=start_stage, variant=variant)
    except SpiffyError as e:
        fail(str(e))
    click.echo(f"saved {summary['name']} ({summary['params']:,} params) in {summary['wall_min']} min")


from . import main  # noqa: E402

main.add_command(train_cmd)
