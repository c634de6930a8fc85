"""`spiffy bench` and `spiffy sample --spiffy` on a tiny model (fast smoke checks of the commands)."""
import json
from pathlib import Path
import sys
import types

import pytest
import torch
from click.testing import CliRunner

from spiffy.cli import main


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bench_tiny(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("what is two plus two?\nadd the numbers\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["bench", "--model", "tiny-llada", "--dtype", "fp64", "--dataset", str(prompts),
                                  "--gen-length", "16", "--block-length", "8", "--budgets", "1,3", "--cache", "none",
                                  "--cache", "dual", "--threshold", "0.5", "--predict", "--ceiling", "--raw",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "bench.json").read_text())
    assert {"cpu", "cpu_cores", "torch", "cuda", "git_commit"} <= set(res["machine"])
    assert len(res["rows"]) == 4 * 2            # (none, dual) x (k1, thr0.5) x budgets (1, 3)
    for row in res["rows"]:
        assert row["identical_rate"] == 1.0
        assert row["predicted_nfe"] == row["nfe"]
        assert row["nfe"] <= row["base_nfe"] and row["ceiling_nfe"] <= row["nfe"]
    assert (out / "bench.md").read_text().startswith("| data |")
    assert all(r["graph_source"] == "default" for r in res["rows"])
    assert (out / "nfe_vs_budget.png").stat().st_size > 1000


def test_bench_missing_data_dir(tmp_path):
    r = CliRunner().invoke(main, ["bench", "--model", "tiny-llada", "--dataset", "gsm8k",
                                  "--data-dir", str(tmp_path / "nowhere")])
    assert r.exit_code == 2
    assert "data directory" in r.output and "--data-dir" in r.output


def test_bench_ar_mode_dispatches(monkeypatch):
    seen = {}
    fake = types.ModuleType("spiffy.bench.ar")
    fake.run_ar_bench = lambda **kw: seen.update(kw)
    monkeypatch.setitem(sys.modules, "spiffy.bench.ar", fake)
    r = CliRunner().invoke(main, ["bench", "--mode", "ar", "--limit", "3"])
    assert r.exit_code == 0, r.output
    assert seen["limit"] == 3


def test_sample_spiffy_json():
    args = ["sample", "--model", "tiny-llada", "--dtype", "fp64", "--prompt", "hello", "--gen-length", "16",
            "--block-length", "8", "--raw", "--json"]
    base = json.loads(CliRunner().invoke(main, args).output)
    r = CliRunner().invoke(main, args + ["--spiffy", "--budget", "5", "--cache", "dual", "--verify", "packed"])
    assert r.exit_code == 0, r.output
    # --cache dual changes the baseline; compare against the same cache without Spiffy
    base_dual = json.loads(CliRunner().invoke(main, args + ["--cache", "dual"]).output)
    out = json.loads(r.output)
    assert out["token_ids"] == base_dual["token_ids"]
    assert out["stats"]["nfe"] == out["nfe"] and "acceptance_by_depth" in out["stats"]
    assert base["nfe"] == 16
    bad = CliRunner().invoke(main, args + ["--budget", "3"])
    assert bad.exit_code == 2 and "--spiffy" in bad.output


def test_bench_uses_calibrated_graph_and_refuses_a_mismatched_one(tmp_path, monkeypatch):
    """The bench resolves calibrated graphs with the decoder's own checks: a matching artifact is used
    (graph column says so), one calibrated for another model is refused with the reason."""
    import spiffy
    from spiffy import GenerationConfig
    from spiffy.backends.fingerprint import model_fingerprint
    from spiffy.bench.dllm import Setting, run_dllm_bench
    from spiffy.calibration.artifact import write_graph_artifact
    from spiffy.errors import ArtifactError
    from spiffy.speculative.calibrated import backend_fingerprint, setting_key
    from spiffy.speculative.graph import make_graph

    be = spiffy.tiny_backend("llada", dtype=torch.float64)
    cfg = GenerationConfig(gen_length=16, block_length=8)
    path = tmp_path / backend_fingerprint(be) / f"{setting_key(cfg, 'llada')}_none" / "D2.json"
    g = make_graph([[(0, 0)], [(0, 0), (1, 0)]], "fixed", [1, 1], meta={"model": "tiny-llada"})
    monkeypatch.setenv("SPIFFY_CALIBRATION", str(tmp_path))
    write_graph_artifact(g, path, {"model": "tiny-llada", "fingerprint": model_fingerprint(be)})
    res = run_dllm_bench(be, [[5, 6, 7]], [Setting(cache="none")], [2], cfg, vanilla=False)
    assert res["rows"][0]["graph_source"] == f"calibrated:{path}"
    assert res["rows"][0]["identical_rate"] == 1.0
    bad = dict(model_fingerprint(be), digest="0" * 16, weights="0" * 16)
    write_graph_artifact(g, path, {"model": "tiny-llada", "fingerprint": bad})
    with pytest.raises(ArtifactError, match="different model"):
        run_dllm_bench(be, [[5, 6, 7]], [Setting(cache="none")], [2], cfg, vanilla=False)


def tiny_mode(tmp_path, mode: str, prompts: str, *extra) -> Path:
    """`spiffy bench --mode MODE` on the tiny model (dual cache, D = 3, 16 tokens); returns the output folder."""
    (tmp_path / "p.txt").write_text(prompts)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["bench", "--mode", mode, "--model", "tiny-llada", "--dataset", str(tmp_path / "p.txt"),
                                  "--gen-length", "16", "--block-length", "8", "--budgets", "3", "--cache", "dual",
                                  "--raw", "--out", str(out), *extra])
    assert r.exit_code == 0, r.output
    return out


def test_bench_static_mode(tmp_path):
    """--mode static: eager and compiled, plain and static; static Spiffy equals the static baseline (eager and
    compiled) and uses fewer calls."""
    out = tiny_mode(tmp_path, "static", "what is two plus two?\n")
    (row,) = json.loads((out / "bench_static.json").read_text())["rows"]
    assert row["static_equals_static_baseline"] == row["compiled_static_equals_compiled_static_baseline"] == 1
    assert row["nfe"]["spiffy_static"] == row["nfe"]["spiffy_static_c"] < row["nfe"]["base_static"]
    assert set(row["tokens_per_s"]) == {"base", "base_static", "spiffy", "spiffy_static", "base_c", "base_static_c",
                                        "spiffy_static_c"}
    assert (out / "bench_static.md").read_text().startswith("| setting |")


def test_bench_batch_mode(tmp_path):
    """--mode batch: Spiffy on a batch of 2 vs the same prompts one at a time; every row equals the baseline's."""
    out = tiny_mode(tmp_path, "batch", "what is two plus two?\nadd the numbers\n", "--batch-sizes", "2")
    (row,) = json.loads((out / "bench_batch.json").read_text())["rows"]
    assert row["batch"] == 2 and row["identical_rows"] == row["identical_rows_one_at_a_time"] == 2
    assert row["spiffy_batch_nfe"] <= row["spiffy_one_at_a_time_nfe"] and row["baseline_tokens_per_s"] > 0
