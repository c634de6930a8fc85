"""``python -m spiffy …`` (and ``torchrun … -m spiffy …``) runs the `spiffy` command."""
from .cli import main

if __name__ == "__main__":
    main(prog_name="spiffy")
