"""The study's privacy-utility arms and table: the DP arms' settings, the table and report
section on hand-made records, and one real tiny study with a DP-SGD arm (NVFlare SimEnv)."""

from __future__ import annotations

import math

import pytest

from fedimg.errors import ConfigError
from fedimg.fl.server.federation import FederationConfig
from fedimg.fl.server.strategy_config import StrategyConfig
from fedimg.study.privacy import PrivacySweep, arm_name, dp_configs, privacy_lines, privacy_table
from fedimg.study.summary import summarise

SITES = ["site-1", "site-2"]


def test_sweep_validation():
    assert PrivacySweep(epsilons=(3, math.inf, 1, 3)).finite == (1.0, 3.0)
    for bad in ({"epsilons": (math.inf,)}, {"epsilons": (0.0, 1.0)}, {"epsilons": (1.0,), "modes": ("user",)},
                {"epsilons": (1.0,), "delta": 1.0}, {"epsilons": (1.0,), "clip": math.inf}):
        with pytest.raises(ConfigError):
            PrivacySweep(**bad)


def test_dp_arm_configs_reach_their_target_epsilon():
    from fedimg.privacy import client_dp_epsilon

    fed = FederationConfig(task="brats", rounds=6, local_epochs=2, train={"seed": 3})
    arms = dp_configs(PrivacySweep(epsilons=(8.0, 1.0), clip=0.3, max_grad_norm=2.0), fed, seed=3)
    assert [(n, m, e) for n, m, e, _ in arms] == [
        (arm_name("sample", 1.0), "sample", 1.0), (arm_name("client", 1.0), "client", 1.0),
        (arm_name("sample", 8.0), "sample", 8.0), (arm_name("client", 8.0), "client", 8.0)]
    for _, mode, eps, f in arms:
        assert f.rounds == 6 and f.train == fed.train and f.strategy == fed.strategy  # same run otherwise
        if mode == "sample":
            assert f.client_dp == {} and f.dp["epsilon"] == eps and f.dp["max_grad_norm"] == 2.0 and f.dp["seed"] == 3
        else:
            assert f.dp == {} and f.client_dp["clip"] == 0.3 and f.client_dp["seed"] == 3
            spent = client_dp_epsilon(noise_multiplier=f.client_dp["noise_multiplier"], rounds=6, delta=1e-5)
            assert eps * 0.9 < spent <= eps  # the noise solved for the target over all rounds
    z = {e: f.client_dp["noise_multiplier"] for _, m, e, f in arms if m == "client"}
    assert z[1.0] > z[8.0] > 0  # a smaller epsilon needs more noise
    with pytest.raises(ConfigError, match="use --dp-mode sample"):  # refused before any arm trains
        dp_configs(PrivacySweep(epsilons=(1.0,), modes=("client",)),
                   FederationConfig(task="brats", strategy=StrategyConfig(name="trimmed_mean")), seed=0)


def _arm(scores, privacy=None):
    curve = [{"epochs_per_case": 2, "val": 0.5, "samples": 8, "steps": 4, "seconds": 1.0}]
    arm = {"test": {"site-1": {"c1": scores[0], "c2": scores[1]}, "site-2": {"c3": scores[2]}},
           "curve": curve, "best_check": 0, "stop_check": 0}
    return {**arm, "privacy": privacy} if privacy else arm


def _p(mode, eps, spent, z):
    return {"mode": mode, "target_epsilon": eps, "epsilon": spent, "noise_multiplier": z, "delta": 1e-5, "clip": 1.0}


def test_table_and_report_section_by_hand(tmp_path):
    rec = {"seed": 0, "split": {x: {"train": ["a"], "val": ["b"], "test": ["c"]} for x in SITES}, "arms": {
        "federated": _arm((0.8, 0.6, 0.7)),
        arm_name("client", 8.0): _arm((0.1, 0.0, 0.2), _p("client", 8.0, 7.9, 1.2)),
        arm_name("sample", 8.0): _arm((0.4, 0.3, 0.35), _p("sample", 8.0, 7.5, 0.9)),
        arm_name("sample", 1.0): _arm((0.2, 0.1, 0.15), _p("sample", 1.0, 0.98, 3.0)),
        "centralised": _arm((0.8, 0.8, 0.8))}}
    results = {"sites": SITES, "seeds": [rec], "protocol": {"n_boot": 200}, "federation": {"max_rounds": 4}}
    results["summary"] = summarise(results)
    t = privacy_table(results)
    assert [(r["mode"], r["target_epsilon"]) for r in t["rows"]] == [("none", "inf"), ("sample", 1.0), ("sample", 8.0),
                                                                     ("client", 8.0)]
    s8 = t["rows"][2]
    assert s8["dice"]["mean"] == pytest.approx(0.35) and s8["epsilon_spent"] == 7.5 and s8["noise_multiplier"] == 0.9
    assert s8["ratio_to_non_private"]["mean"] == pytest.approx(0.35 / 0.7)  # paired with the non-private arm
    assert t["rows"][0]["dice"]["mean"] == pytest.approx(0.7) and t["rounds"] == 4
    lines = privacy_lines({**results, "privacy_utility": t}, tmp_path)
    text = "\n".join(lines)
    assert "| DP-SGD | 1 | 0.98 | 3.000 |" in text and "| client DP | 8 | 7.90 |" in text and "| none | ∞ |" in text
    assert "no amplification" in text and (tmp_path / "privacy_utility.png").stat().st_size > 1000
    other = {**rec, "arms": {k: v for k, v in rec["arms"].items() if "client" not in k}}
    with pytest.raises(ConfigError, match="different DP arms"):
        privacy_table({**results, "seeds": [rec, other]})

    # merging studies run with other seeds recomputes the table over the pooled seeds
    from fedimg.io import read_json, write_json
    from fedimg.study.runner import merge_studies

    base = {**results, "protocol": {"n_boot": 50, "seeds": 1, "base_seed": 0, "check_every": 2, "patience": 1,
                                    "max_epochs": 2, "test_fraction": 0.25},
            "federation": {"strategy": {"name": "fedavg"}, "compare": [], "local_epochs": 2, "max_rounds": 1},
            "train_config": {"seed": 0}, "privacy": {"epsilons": [1.0, 8.0]}, "privacy_utility": t}
    for k in (0, 1):
        write_json(tmp_path / f"s{k}" / "results.json", {**base, "seeds": [{**rec, "seed": k}]})
    merged = merge_studies([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    assert [r["mode"] for r in merged["privacy_utility"]["rows"]] == ["none", "sample", "sample", "client"]
    assert read_json(tmp_path / "merged" / "results.json")["privacy_utility"]["rows"][2]["dice"]["mean"] == \
        pytest.approx(0.35)
    assert "Privacy-utility" in (tmp_path / "merged" / "report.md").read_text()


@pytest.mark.slow
def test_study_with_a_dp_arm_end_to_end(tmp_path):
    """A tiny real study: the non-private arms and a DP-SGD arm at ε = 8 on the same split."""
    from fedimg.cli import main
    from fedimg.data.synth import synthesize
    from fedimg.io import read_json

    synthesize(tmp_path / "data", sites=2, cases_per_site=3, seed=0, spacing=4.0)
    out = tmp_path / "study"
    cfg = tmp_path / "train.json"  # no window overlap: about half the sliding windows in every evaluation
    cfg.write_text('{"sw_overlap": 0.0}')
    rc = main(["study", "--data", str(tmp_path / "data"), "--out", str(out), "--seeds", "1", "--rounds", "1",
               "--local-epochs", "1", "--patience", "1", "--roi", "16", "16", "16", "--batch-size", "2",
               "--init-filters", "8", "--threads", "1", "--allow-identifiable", "--no-progress", "--bootstrap", "50",
               "--config", str(cfg), "--dp-epsilon", "8", "inf", "--dp-mode", "sample"])
    assert rc == 0
    res = read_json(out / "results.json")
    (rec,) = res["seeds"]
    name = arm_name("sample", 8.0)
    assert rec["arms"][name]["test"].keys() == rec["arms"]["federated"]["test"].keys()  # the same test cases
    assert {c for s in rec["arms"][name]["test"].values() for c in s} == {c for s in rec["split"].values()
                                                                         for c in s["test"]}
    t = res["privacy_utility"]
    (row,) = [r for r in t["rows"] if r["mode"] == "sample"]
    assert 0 < row["epsilon_spent"] <= 8.0 and row["noise_multiplier"] > 0  # measured at the sites, within target
    assert res["privacy"]["epsilons"] == [8.0, "inf"]
    assert res["train_config"]["sw_overlap"] == 0.0  # the --config file reached the study
    assert "Privacy-utility" in (out / "report.md").read_text() and (out / "privacy_utility.png").is_file()
