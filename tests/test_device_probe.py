"""The one-call GPU probe (models/device/gpu_probe.sh) runs end to end on the CPU at toy shapes."""
import json

from spiffy.bench import device_probe


def test_probe_dry_run(tmp_path):
    out = tmp_path / "probe.json"
    res = device_probe.main(["--small", "--device", "cpu", "--out", str(out), "--prompts", "1", "--gen-length", "32",
                             "--budgets", "3", "--repeats", "1", "--rows", "1,4,9", "--compiled-rows", "",
                             "--context", "64"])
    saved = json.loads(out.read_text())
    assert saved["seconds"] == res["seconds"]
    for name in ("llada-8b", "dream-7b"):
        assert set(saved["cost"][name]["eager"]) == {"1", "4", "9"}
    run = saved["identical"]["runs"]["batch/D3"]
    assert run["identical_rate"] == 1.0 and run["nfe_spiffy"] <= run["nfe_baseline"]
    for key in ("static-batch/D3", "static-packed/D3"):   # bit for bit the static baseline, by construction
        assert saved["identical"]["runs"][key]["identical_rate"] == 1.0
    comp = saved["identical"]["compiled"]["D3"]
    assert "error" not in comp, comp
    assert comp["compiled_spiffy_equals_compiled_baseline"] and comp["eager_spiffy_s"] > 0
    from spiffy.costs import CostTable

    (tmp_path / "t.json").write_text(json.dumps(saved["cost_tables"]["llada-8b/eager"]))
    assert CostTable.load(str(tmp_path / "t.json")).call_s(32, 64) == saved["cost"]["llada-8b"]["eager"]["1"]
    proj = saved["projection"]["llada-8b/eager/batch/D3"]
    assert proj["nfe_ratio"] == run["nfe_ratio"] and proj["projected_wall_ratio"] > 0


def test_interpolation_stays_inside_the_measured_curve():
    import pytest

    c = {"1": 1.0, "3": 2.0}
    assert device_probe._interp(c, 2) == 1.5
    with pytest.raises(ValueError):
        device_probe._interp(c, 4)


def test_replayed_section_dry_run(tmp_path):
    """Section 4 at toy shapes: Spiffy's real calls on a random model follow the reference dLLM's traces (its NFE is
    the trace's replayed NFE), eager and compiled (static), against the baseline on the same model."""
    out = tmp_path / "probe.json"
    device_probe.main(["--small", "--device", "cpu", "--out", str(out), "--only-replayed", "--context", "48",
                       "--replayed-prompts", "1", "--replayed-gen-length", "32", "--replayed-budgets", "3"])
    rep = json.loads(out.read_text())["replayed"]
    assert "error" not in rep, rep
    for phase in ("eager", "compiled"):
        row = rep["runs"][f"{phase}/D3"]
        assert row["nfe_equals_replay"] and row["nfe_baseline"] == 32 and row["nfe_spiffy"] < 32, row
        assert row["baseline_s"] > 0 and row["spiffy_s"] > 0 and row["rounds"] > 0
