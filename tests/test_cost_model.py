"""The cost-model projection: each recorded call priced by its shape; the bench's projected column; bad tables."""
import json

import pytest
from click.testing import CliRunner

from spiffy import GenerationConfig
from spiffy.backends.tiny import tiny_backend
from spiffy.costs import CostTable
from spiffy.cli import main
from spiffy.errors import ConfigError
from spiffy.sampling.baseline import generate_baseline
from spiffy.speculative import SpeculativeConfig, generate_speculative


def table(tmp_path, **over):
    raw = {"format": "spiffy-cost-table/1", "block_length": 8, "cached_step_s": {"by_blocks": {"1": 1.0, "4": 2.5}},
           "full_forward_s": {"by_tokens": {"64": 4.0}}, **over}
    p = tmp_path / "t.json"
    p.write_text(json.dumps(raw))
    return p


def test_pricing(tmp_path):
    t = CostTable.load(str(table(tmp_path)))
    assert t.call_s(8, 100) == 1.0            # one block over a context
    assert t.call_s(16, 100) == 1.5           # two blocks: linear between 1 and 4 blocks
    assert t.call_s(64, 100) == 2.5 * 2       # 8 blocks: proportional beyond the last point
    assert t.call_s(10, 0) == 4.0             # a full forward below the first point costs the first point
    assert t.call_s(128, 0) == 8.0
    assert t.price([(8, 100), (128, 0)]) == 9.0
    bundled = CostTable.load("h100-llada8b-bf16")
    assert bundled.call_s(32, 480) == pytest.approx(0.0140) and bundled.call_s(9 * 32, 480) > bundled.call_s(32, 480)


def test_a_table_is_parsed_once_per_version_of_its_file(tmp_path):
    p = table(tmp_path)
    t = CostTable.load(str(p))
    assert CostTable.load(str(p)) is t and CostTable.load(str(tmp_path / "." / "t.json")) is t
    table(tmp_path, block_length=16)             # the file changes: read again
    t2 = CostTable.load(str(p))
    assert t2 is not t and t2.block_length == 16 and t.block_length == 8


def test_calls_are_recorded_as_run():
    be = tiny_backend("llada")
    cfg = GenerationConfig(gen_length=16, block_length=8, cache="dual")
    base = generate_baseline(be, [[3, 4, 5]], cfg)
    assert len(base.calls) == base.nfe
    L = 3 + 16
    assert base.calls[0] == (L, 0) and base.calls[1] == (8, L - 8)     # block start, then the block over the cache
    spec = generate_speculative(be, [[3, 4, 5]], cfg, SpeculativeConfig(budget=3, use_calibration=False))
    assert len(spec.calls) == spec.nfe and sum(q for q, _ in spec.calls) == spec.tokens_processed


@pytest.mark.parametrize("bad,msg", [({"format": "x"}, "not a cost table"), ({"block_length": 0}, "positive"),
                                     ({"cached_step_s": {"by_blocks": {}}}, "at least one point"),
                                     ({"full_forward_s": {"by_tokens": {"a": 1}}}, "size -> seconds")])
def test_bad_tables(tmp_path, bad, msg):
    with pytest.raises(ConfigError, match=msg):
        CostTable.load(str(table(tmp_path, **bad)))
    with pytest.raises(ConfigError, match="no bundled table"):
        CostTable.load("no-such-table")


def test_bench_projects(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("what is two plus two?\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["bench", "--model", "tiny-llada", "--dataset", str(prompts), "--gen-length", "16",
                                  "--block-length", "8", "--budgets", "3", "--cache", "dual", "--raw", "--no-vanilla",
                                  "--cost-model", str(table(tmp_path)), "--out", str(out)])
    assert r.exit_code == 0, r.output
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    p = row["projected"]["t"]
    assert p["wall_ratio"] == round(p["baseline_s"] / p["spiffy_s"], 4) and p["baseline_s"] > 0
    assert "projected wall ratio" in (out / "bench.md").read_text()
    r = CliRunner().invoke(main, ["bench", "--model", "tiny-llada", "--dataset", str(prompts), "--cost-model", "nope"])
    assert r.exit_code != 0 and "no bundled table" in r.output
