"""How far apart do the sites' normalised intensities sit? z-score against landmark, development data only.

    python benchmarks/intensity_spread.py --synth-seed 3      # h12i (~1 CPU min)

Synthesises a development split as ``benchmarks/study_dev.py --heads all --synth-seed G`` does
(3 sites, 6/8/10 cases, 4 mm, ``--hard``; generator seed 7, the held-aside setting, is refused),
preprocesses every case with each ``TrainConfig.intensity_norm`` and reports, per channel, each
site's mean normalised intensity inside the tumour (whole-tumour region) and in the rest of the head,
and the spread of those site means (max - min over sites): what a shared model must absorb across
sites. No training. Writes ``benchmarks/cpu-results/intensity-spread.json``. Not in the wheel.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

CHANNELS = ("t1", "t1ce", "t2", "flair")


def spread(root: Path, norms: tuple[str, ...] = ("zscore", "landmark")) -> dict:
    """``{norm: {site: {channel: [tumour mean, rest-of-head mean]}, "spread": {channel: [..., ...]}}}``."""
    from fedimg.data import discover, load_case
    from fedimg.engine.cache import preprocess
    from fedimg.fl.server.federation import discover_sites

    out: dict = {n: {} for n in norms}
    for site, path in discover_sites(root).items():
        per = {n: [] for n in norms}
        for case in discover(path):
            arrays = load_case(case)
            for n in norms:
                p = preprocess(arrays.image, arrays.regions, intensity_norm=n)
                img, wt = p.image.numpy(), p.regions[1].numpy().astype(bool)
                head = (img != 0).any(0) & ~wt
                per[n].append([[float(img[c][wt].mean()), float(img[c][head].mean())] for c in range(img.shape[0])])
        for n in norms:
            m = np.mean(per[n], axis=0)  # (channels, 2)
            out[n][site] = {ch: [round(float(a), 3), round(float(b), 3)] for ch, (a, b) in zip(CHANNELS, m)}
    for n in norms:
        sites = [v for k, v in out[n].items()]
        out[n]["spread"] = {ch: [round(max(s[ch][i] for s in sites) - min(s[ch][i] for s in sites), 3) for i in (0, 1)]
                            for ch in CHANNELS}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synth-seed", type=int, default=3, help="generator seed (default 3; 7 is refused)")
    p.add_argument("--json", default=str(Path(__file__).parent / "cpu-results" / "intensity-spread.json"))
    a = p.parse_args(argv)
    if a.synth_seed == 7:
        raise SystemExit("intensity_spread: generator seed 7 is the held-aside setting; pick another --synth-seed")
    from fedimg.data.anatomy import HEADS
    from fedimg.data.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        synthesize(Path(tmp) / "dev", sites=3, cases_per_site=[6, 8, 10], seed=a.synth_seed, spacing=4.0, workers=1,
                   heads=tuple(HEADS), hard=True)
        res = {"synth_seed": a.synth_seed, **spread(Path(tmp) / "dev")}
    for n in ("zscore", "landmark"):
        print(f"{n:9s} spread over sites of the mean (tumour, rest of head): " + "; ".join(
            f"{ch} {v[0]:.3f}, {v[1]:.3f}" for ch, v in res[n]["spread"].items()))
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
