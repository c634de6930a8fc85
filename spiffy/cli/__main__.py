"""`python -m spiffy.cli ...` runs the `spiffy` command (for machines where the project is on PYTHONPATH
but not installed, such as the device machine)."""
from . import main

if __name__ == "__main__":
    main(prog_name="spiffy")
