"""The CLI's sampler options come from GenerationConfig (one source of names, defaults and help), and the
library outside spiffy/cli does not use click."""
import dataclasses
from pathlib import Path

from click.testing import CliRunner

from spiffy.cli import main
from spiffy.sampling.config import GenerationConfig

ROOT = Path(__file__).resolve().parents[1]


def test_every_generation_field_is_an_option_with_the_dataclass_default():
    cmd = main.commands["sample"]
    params = {p.name: p for p in cmd.params}
    for f in dataclasses.fields(GenerationConfig):
        assert f.name in params, f"spiffy sample cannot set {f.name}"
        assert params[f.name].default == f.default, f.name
        assert params[f.name].help == f.metadata["help"], f.name
    for name in ("calibrate", "bench"):   # the same options, with the paper's generation length as default
        params = {p.name: p for p in main.commands[name].params}
        for f in dataclasses.fields(GenerationConfig):
            if name == "bench" and f.name in ("cache", "threshold", "tokens_per_step", "steps"):
                continue   # the bench takes lists of settings instead
            assert f.name in params, f"spiffy {name} cannot set {f.name}"
            assert params[f.name].help == f.metadata["help"], (name, f.name)
            assert params[f.name].default == (256 if f.name == "gen_length" else f.default), (name, f.name)
    from spiffy.cli.serve import PER_REQUEST   # the server: all but what each request sets

    params = {p.name: p for p in main.commands["serve"].params}
    for f in dataclasses.fields(GenerationConfig):
        assert (f.name in params) == (f.name not in PER_REQUEST), f.name


def test_options_reach_the_config(monkeypatch):
    seen = {}

    import spiffy.cli.sample as sample

    real = sample.config_from

    def spy(kw):
        cfg = real(kw)
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(sample, "config_from", spy)
    r = CliRunner().invoke(main, ["sample", "--model", "tiny-dream", "--prompt", "hi", "--alg-temp", "0.5",
                                  "--logits-eos-inf", "--confidence-eos-eot-inf", "--sampler", "dream"])
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert (cfg.alg_temp, cfg.logits_eos_inf, cfg.confidence_eos_eot_inf, cfg.sampler) == (0.5, True, True, "dream")


def test_library_has_no_click():
    users = [p.relative_to(ROOT) for p in (ROOT / "spiffy").rglob("*.py")
             if "cli" not in p.relative_to(ROOT / "spiffy").parts and "import click" in p.read_text()]
    assert not users, f"click outside spiffy/cli: {users}"


def test_spiffy_generate_stays_the_function_after_its_module_is_imported():
    import importlib

    import spiffy

    importlib.import_module("spiffy.generation")
    assert callable(spiffy.generate) and spiffy.generate.__name__ == "generate"


def test_every_speculative_field_is_an_option_and_reaches_the_config(monkeypatch, tmp_path):
    """Spiffy's options are SpeculativeConfig's fields (names, defaults, help); what the command line sets is
    what generate() receives; reading them imports no torch (so `spiffy --help` stays quick)."""
    import subprocess
    import sys

    from spiffy.speculative.config import SpeculativeConfig

    params = {p.name: p for p in main.commands["sample"].params}
    for f in dataclasses.fields(SpeculativeConfig):
        assert f.name in params, f"spiffy sample cannot set {f.name}"
        assert params[f.name].default == f.default and params[f.name].help == f.metadata["help"], f.name
    import spiffy.generation

    seen = {}

    def spy(backend, prompt, cfg, chat=True, speculative=None):
        seen["spec"] = speculative
        raise SystemExit(0)

    monkeypatch.setattr(spiffy.generation, "generate", spy)
    r = CliRunner().invoke(main, ["sample", "--model", "tiny-llada", "--prompt", "hi", "--spiffy", "--budget", "3",
                                  "--verify", "packed", "--prune", "2", "--no-use-calibration", "--calibration-dir",
                                  str(tmp_path), "--measure-mismatch", "--allow-mismatch", "--static"])
    assert r.exit_code == 0, r.output
    assert dataclasses.asdict(seen["spec"]) == dict(
        budget=3, graph=None, verify="packed", prune=2, use_calibration=False, calibration_dir=str(tmp_path),
        measure_mismatch=True, allow_mismatch=True, static=True)
    r = CliRunner().invoke(main, ["sample", "--model", "tiny-llada", "--prompt", "hi", "--prune", "2"])
    assert r.exit_code == 2 and "need --spiffy (given: --prune)" in r.output
    code = "import sys, spiffy.cli.sample; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
