"""`spiffy sample` on the built-in tiny model: JSON fields, help text, clear errors."""
import json

from click.testing import CliRunner

from spiffy.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_sample_json_fields():
    r = run("sample", "--model", "tiny-llada", "--prompt", "hello there", "--gen-length", "16", "--block-length", "8",
            "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    for key in ("prompt_ids", "token_ids", "text", "nfe", "wall_s"):
        assert key in out
    assert len(out["token_ids"]) == 16 and out["nfe"] == 16
    assert out["prompt_ids"] and all(isinstance(t, int) for t in out["prompt_ids"])


def test_sample_cache_and_threshold_match_library():
    import spiffy

    be = spiffy.load_backend("tiny-dream")
    lib = spiffy.generate(be, "abc", gen_length=16, block_length=8, cache="dual", threshold=0.5, chat=False)
    r = run("sample", "--model", "tiny-dream", "--prompt", "abc", "--gen-length", "16", "--block-length", "8",
            "--cache", "dual", "--threshold", "0.5", "--raw", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["token_ids"] == lib.token_ids[0]


def test_help_is_complete():
    r = run("--help")
    assert r.exit_code == 0 and "sample" in r.output
    r = run("sample", "--help")
    for opt in ("--model", "--prompt", "--gen-length", "--block-length", "--steps", "--temperature", "--cfg-scale",
                "--remasking", "--threshold", "--cache", "--seed", "--device", "--dtype", "--json", "--raw"):
        assert opt in r.output, opt


def test_clear_errors():
    r = run("sample", "--model", "/nonexistent/model", "--prompt", "x")
    assert r.exit_code == 2 and "not found" in r.output
    r = run("sample", "--model", "tiny-llada", "--prompt", "x", "--gen-length", "30", "--block-length", "8")
    assert r.exit_code == 2 and "not divisible by block_length" in r.output
    r = run("sample", "--model", "tiny-llada", "--prompt", "x", "--gen-length", "16", "--block-length", "8",
            "--threshold", "2")
    assert r.exit_code == 2 and "threshold" in r.output
