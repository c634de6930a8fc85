"""Bad input never crashes and nothing is overwritten or half-written.

Table-driven: every case runs the real `spiffy` command in a subprocess (as a user would) and must exit
non-zero with exactly one line on stderr, no traceback, and no file changed under its working folder.
Then the calibration set as one unit (refused overwrite, --force, umask, stale temporaries), and kill
tests: calibration and bench killed at several points leave the previous artifacts (or none) loadable.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}


def spiffy(*args, cwd, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "spiffy.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**ENV, **(env or {})})


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def work(tmp_path):
    (tmp_path / "ok.jsonl").write_text('{"prompt": "abc"}\n{"prompt": "hello"}\n')
    (tmp_path / "bad_utf8.txt").write_bytes(b"fine line\n\xff\xfe broken\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"\n')
    (tmp_path / "noprompt.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "graph.json").write_text("{not json")
    return tmp_path


TINY = ["--model", "tiny-llada", "--gen-length", "8", "--block-length", "8"]
CASES = {
    # data files
    "prompt file with invalid UTF-8": (["calibrate", *TINY, "--dataset", "bad_utf8.txt"], "bad_utf8.txt:2"),
    "empty prompt file": (["bench", "--model", "tiny-llada", "--dataset", "empty.jsonl"], "no prompts"),
    "broken JSON line": (["calibrate", *TINY, "--dataset", "broken.jsonl"], "broken.jsonl:2"),
    "row without a prompt": (["bench", "--dataset", "noprompt.jsonl"], "row 1"),
    "unknown dataset": (["bench", "--dataset", "nosuchset"], "unknown dataset"),
    # malformed numbers and ranges
    "letters in --budgets (bench)": (["bench", "--budgets", "3,x", "--dataset", "ok.jsonl"], "comma-separated"),
    "letters in --budgets (calibrate)": (["calibrate", "--budgets", "3,,z", "--dataset", "ok.jsonl"], "comma-separated"),
    "huge budget (calibrate)": (["calibrate", "--budgets", "5000", "--dataset", "ok.jsonl"], "[1, 64]"),
    "huge budget (sample)": (["sample", "--model", "tiny-llada", "--prompt", "a", "--spiffy", "--budget", "5000"],
                             "at most 64"),
    "bad --prune pair": (["calibrate", "--budgets", "3", "--prune", "10:x", "--dataset", "ok.jsonl"], "D:keep"),
    "--limit 0": (["bench", "--limit", "0", "--dataset", "ok.jsonl"], "--limit"),
    "negative --limit": (["calibrate", "--limit", "-3", "--dataset", "ok.jsonl"], "--limit"),
    "not an integer": (["sample", "--prompt", "a", "--gen-length", "lots"], "--gen-length"),
    "negative temperature": (["sample", "--model", "tiny-llada", "--prompt", "a", "--temperature", "-1"],
                             "temperature"),
    # devices
    "missing GPU": (["sample", "--model", "tiny-llada", "--prompt", "a", "--device", "cuda"], "this machine has: cpu"),
    "device that does not exist": (["sample", "--model", "tiny-llada", "--prompt", "a", "--device", "tpu9"],
                                   "this machine has"),
    "GPU for the AR target": (["sample", "--target", "smollm2-135m-instruct", "--prompt", "a", "--device", "cuda:1"],
                              "this machine has"),
    # options that do not apply to the mode
    "dLLM options in AR mode": (["sample", "--target", "x", "--prompt", "a", "--spiffy", "--cache", "dual"],
                                "do not apply to AR-verifier mode"),
    "AR options without --target": (["sample", "--prompt", "a", "--tree", "3"], "--tree does not apply"),
    "dLLM bench options in --mode ar": (["bench", "--mode", "ar", "--budgets", "3"], "--budgets does not apply"),
    "AR bench options in --mode spiffy": (["bench", "--strategies", "ngram"], "--mode ar"),
    "Spiffy options without --spiffy": (["sample", "--prompt", "a", "--budget", "3"], "need --spiffy"),
    # graphs and models
    "corrupt --graph file": (["sample", "--model", "tiny-llada", "--prompt", "a", "--gen-length", "8",
                              "--block-length", "8", "--spiffy", "--graph", "graph.json"], "graph.json"),
    "unknown model path": (["sample", "--model", "./no/such/model", "--prompt", "a"], "not found"),
    "unknown command": (["frobnicate"], "No such command"),
    "missing recipe": (["train", "--recipe", "nope.json"], "does not exist"),
    "training on a missing GPU": (["train", "--recipe", "ok.jsonl", "--device", "cuda"], "this machine has"),
    "zero block length": (["sample", "--model", "tiny-llada", "--prompt", "a", "--block-length", "0"],
                          "block_length must be positive"),
    "unknown named model": (["models", "fetch", "gpt-17"], "unknown model name"),
    # spiffy bench --mode batch
    "zero batch size": (["bench", "--mode", "batch", "--model", "./no/such/model", "--batch-sizes", "4,0",
                         "--dataset", "ok.jsonl"], "--batch-sizes must be integers in [1, 256]"),
    "batch sizes without --mode batch": (["bench", "--batch-sizes", "4", "--dataset", "ok.jsonl"],
                                         "--batch-sizes does not apply without --mode batch"),
    "replay options in --mode batch": (["bench", "--mode", "batch", "--predict", "--dataset", "ok.jsonl"],
                                       "--predict does not apply to --mode batch"),
    # static shapes, compiled steps and cost models (issue 16)
    "--static without --spiffy": (["sample", "--model", "tiny-llada", "--prompt", "a", "--static"], "need --spiffy"),
    "negative --static-drafts": (["sample", "--model", "tiny-llada", "--prompt", "a", "--static-drafts", "-1"],
                                 "static_drafts must be a non-negative integer"),
    "static shape smaller than the budget": (["sample", "--model", "tiny-llada", "--prompt", "a", "--gen-length", "8",
                                              "--block-length", "8", "--spiffy", "--budget", "4", "--static-drafts", "2"],
                                             "cannot hold"),
    "unknown --compile value": (["sample", "--model", "tiny-llada", "--prompt", "a", "--compile", "sometimes"],
                                "--compile"),
    "corrupt --cost-model file": (["bench", "--model", "tiny-llada", "--dataset", "ok.jsonl", "--cost-model",
                                   "graph.json"], "cost model graph.json"),
    "--cost-model in --mode static": (["bench", "--mode", "static", "--cost-model", "x", "--dataset", "ok.jsonl"],
                                      "--cost-model does not apply to --mode static"),
    # Spiffy options generated from SpeculativeConfig
    "negative --prune": (["sample", "--model", "tiny-llada", "--prompt", "a", "--spiffy", "--prune", "-1"],
                         "prune must be a non-negative integer"),
    "unknown --prune cost table": (["sample", "--model", "tiny-llada", "--prompt", "a", "--spiffy", "--prune",
                                    "cost:no-such-table"], "no bundled table of that name"),
    "--prune that is neither": (["sample", "--model", "tiny-llada", "--prompt", "a", "--spiffy", "--prune", "fast"],
                                "prune must be a non-negative integer or cost:TABLE"),
    "bench --prune with an unknown cost table": (["bench", "--model", "tiny-llada", "--dataset", "ok.jsonl", "--prune",
                                                  "cost:no-such-table", "--budgets", "3"], "no bundled table"),
    "--calibration-dir that is not a directory": (["sample", "--model", "tiny-llada", "--prompt", "a", "--spiffy",
                                                   "--calibration-dir", "no-such-dir"], "is not a directory"),
    # the bundled-name lookup does not hide a typo
    "unknown bundled-looking model": (["sample", "--model", "spiffy-no-such-model", "--prompt", "a"], "not found"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_one_clear_line(work, case):
    args, needle = CASES[case]
    before = snapshot(work)
    r = spiffy(*args, cwd=work, env={"SPIFFY_CACHE": str(work / ".cache")})
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode != 0, (case, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:") and needle in lines[0], lines[0]
    after = {k: v for k, v in snapshot(work).items() if not k.startswith(".cache/")}
    assert after == before, "a failed command changed files"


def test_help_and_version_do_not_import_torch(tmp_path):
    code = ("import sys; from spiffy.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    t0 = time.perf_counter()
    r = spiffy("--version", cwd=tmp_path)
    assert r.returncode == 0 and "spiffy" in r.stdout
    assert time.perf_counter() - t0 < 20


def test_graph_file_gets_the_fingerprint_check(tmp_path):
    """A calibrated graph for another model, given with --graph, is refused unless --allow-mismatch."""
    from spiffy.backends import tiny_backend
    from spiffy.calibration.pipeline import CalibrationConfig, calibrate
    from spiffy.sampling.config import GenerationConfig

    other = tiny_backend("llada", seed=1)
    cfg = GenerationConfig(gen_length=8, block_length=8)
    rep = calibrate(other, [{"prompt": "abc"}, {"prompt": "hello"}], cfg, CalibrationConfig([2]), out_dir=tmp_path / "cal",
                    chat=False).report
    graph = tmp_path / "cal" / rep["folder"] / "D2.json"
    args = ["sample", "--model", "tiny-llada", "--prompt", "abc", "--raw", *TINY[2:], "--spiffy", "--graph", graph]
    r = spiffy(*args, cwd=tmp_path)
    assert r.returncode == 2 and "different model" in r.stderr and "--allow-mismatch" in r.stderr
    r = spiffy(*args, "--allow-mismatch", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


# ---- the calibration set as one unit ---------------------------------------------------------------------

CAL = ["calibrate", "--model", "tiny-llada", "--gen-length", "16", "--block-length", "8", "--budgets", "2,3",
       "--raw", "--dataset"]


def _set_ok(folder: Path, budgets=(2, 3)):
    from spiffy.backends import load_backend
    from spiffy.speculative.calibrated import load_graph_artifact

    be = load_backend("tiny-llada")   # what the command calibrated
    rep = json.loads((folder / "report.json").read_text())
    assert rep["budgets"] == list(budgets)
    for D in budgets:
        load_graph_artifact(folder / f"D{D}.json", be)
    return rep


def test_calibration_set_is_not_overwritten_without_force(work):
    out = work / "cal"
    r = spiffy(*CAL, "ok.jsonl", "--out", out, cwd=work)
    assert r.returncode == 0, r.stderr
    folder = out / "tiny-llada" / "b8_k1_g16_none"
    first = snapshot(folder)
    r = spiffy(*CAL, "ok.jsonl", "--limit", "1", "--out", out, cwd=work)
    assert r.returncode == 2 and "--force" in r.stderr and snapshot(folder) == first
    r = spiffy(*CAL, "ok.jsonl", "--limit", "1", "--out", out, "--force", cwd=work)
    assert r.returncode == 0, r.stderr
    assert _set_ok(folder)["size"] == 1
    assert sorted(p.name for p in folder.parent.iterdir()) == ["b8_k1_g16_none"]   # no temporaries


def test_default_output_is_the_user_dir_that_the_decoder_searches(work):
    from spiffy import generate, load_backend
    from spiffy.sampling.config import GenerationConfig
    from spiffy.speculative import SpeculativeConfig

    cache = work / "home-cache"
    r = spiffy(*CAL, "ok.jsonl", cwd=work, env={"SPIFFY_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    folder = cache / "calibration" / "tiny-llada" / "b8_k1_g16_none"
    _set_ok(folder)
    umask = os.umask(0)
    os.umask(umask)
    for p in folder.iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p     # modes follow the umask
    os.environ["SPIFFY_CACHE"] = str(cache)
    try:
        be = load_backend("tiny-llada")
        res = generate(be, be.encode_prompt("abc", chat=False), GenerationConfig(gen_length=16, block_length=8),
                       speculative=SpeculativeConfig(budget=3))
    finally:
        del os.environ["SPIFFY_CACHE"]
    assert str(folder) in res.stats.to_dict()["graph_source"]


def _kill_points(seconds: float) -> list:
    return [seconds * f for f in (0.35, 0.6, 0.8, 0.95)]


def test_killed_calibration_leaves_a_whole_set(work):
    out = work / "cal"
    r = spiffy(*CAL, "ok.jsonl", "--out", out, cwd=work)
    assert r.returncode == 0
    folder = out / "tiny-llada" / "b8_k1_g16_none"
    t0 = time.perf_counter()
    r = spiffy(*CAL, "ok.jsonl", "--limit", "1", "--out", out, "--force", "--plot", cwd=work)
    full = time.perf_counter() - t0
    assert r.returncode == 0
    for delay in _kill_points(full):
        p = subprocess.Popen([sys.executable, "-m", "spiffy.cli", *map(str, CAL), "ok.jsonl", "--out", str(out),
                              "--force", "--plot"], cwd=work, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        rep = _set_ok(folder)                         # the old set or the new one, whole
        assert rep["size"] in (1, 2)
    r = spiffy(*CAL, "ok.jsonl", "--out", out, "--force", cwd=work)
    assert r.returncode == 0
    assert sorted(p.name for p in folder.parent.iterdir()) == ["b8_k1_g16_none"]   # stale temporaries removed
    assert not [p for p in folder.rglob(".*")]


def test_killed_bench_leaves_no_half_file(work, tmp_path):
    from tests.ar_fixtures import tiny_target

    import torch

    tdir = tmp_path / "tgt"
    t = tiny_target(dtype=torch.float32)
    t.model.save_pretrained(tdir)
    t.tokenizer.save_pretrained(tdir)
    out = work / "bench"
    args = ["bench", "--mode", "ar", "--target", tdir, "--strategies", "ngram", "--dataset", "ok.jsonl",
            "--gen-length", "24", "--raw", "--out", out]
    t0 = time.perf_counter()
    r = spiffy(*args, cwd=work)
    full = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    first = json.loads((out / "bench.json").read_text())
    for delay in _kill_points(full):
        p = subprocess.Popen([sys.executable, "-m", "spiffy.cli", *map(str, args)], cwd=work, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        res = json.loads((out / "bench.json").read_text())    # whole JSON: the old or the new run
        assert set(res) == set(first)


SHORTLIST_CASES = {
    "missing data directory": (["--data-dir", "no-such-dir"], "data directory"),
    "unknown target": (["--data-dir", ".", "--target", "no-such-model"], "not found"),
    "size below 1": (["--data-dir", ".", "--size", "0"], "--size must be at least 1"),
}


@pytest.mark.parametrize("case", list(SHORTLIST_CASES), ids=list(SHORTLIST_CASES))
def test_shortlist_tool_bad_input_is_one_clear_line(tmp_path, case):
    """`python -m spiffy_train.shortlist` (a drafter's shortlist.json): one error line, no traceback, no file."""
    args, needle = SHORTLIST_CASES[case]
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "spiffy_train.shortlist", *args, "--out", str(tmp_path / "s.json")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**ENV, "PYTHONPATH": str(repo)})
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert not (tmp_path / "s.json").exists()
