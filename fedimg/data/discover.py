"""Find the cases of a data folder: BraTS 2021 / 2023 case folders or an MSD Task01 folder.

Supported layouts (detected automatically):

- **brats2021**: ``ROOT/<case>/<case>_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair``, ``_seg``
  (labels 0/1/2/4).
- **brats2023**: ``ROOT/<case>/<case>-t1n.nii.gz``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``
  (labels 0/1/2/3, enhancing = 3).
- **msd**: Medical Segmentation Decathlon Task01_BrainTumour, ``ROOT/dataset.json`` listing
  ``imagesTr/BRATS_xxx.nii.gz`` (one 4-D image, channels FLAIR, T1w, t1gd, T2w) and
  ``labelsTr/BRATS_xxx.nii.gz`` (1 oedema, 2 non-enhancing, 3 enhancing). ``load_case``
  reorders the channels to fedimg's t1, t1ce, t2, flair.

``ROOT`` may also be a single case folder (one case is returned). ``.nii`` works as well
as ``.nii.gz``.

>>> import pathlib, tempfile
>>> site = pathlib.Path(tempfile.mkdtemp()); (site / "case-000").mkdir()
>>> for m in ("t1", "t1ce", "t2", "flair", "seg"):
...     _ = (site / "case-000" / f"case-000_{m}.nii.gz").write_bytes(b"")  # names only: nothing is read
>>> cases = discover(site)
>>> cases[0].case_id, cases[0].layout, [p.name for p in cases[0].images]
('case-000', 'brats2021', ['case-000_t1.nii.gz', 'case-000_t1ce.nii.gz', 'case-000_t2.nii.gz', 'case-000_flair.nii.gz'])
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fedimg.data.labels import LAYOUTS
from fedimg.errors import InputError
from fedimg.io import read_json
from fedimg.imageio.provenance import defacing_problem
from fedimg.imageio.suffixes import NIFTI_SUFFIXES, is_nifti, split_suffix

__all__ = ["MODALITIES", "MSD_CHANNELS", "Case", "discover", "case_files", "msd_image_case"]

log = logging.getLogger(__name__)

#: fedimg's channel order for every layout.
MODALITIES: tuple[str, str, str, str] = ("t1", "t1ce", "t2", "flair")
#: Channel order of the MSD Task01 4-D images, as its dataset.json states.
MSD_CHANNELS: tuple[str, str, str, str] = ("FLAIR", "T1w", "t1gd", "T2w")

_SUFFIXES: dict[str, dict[str, str]] = {
    "brats2021": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
    "brats2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
}
_LAYOUT_HELP = (
    "expected BraTS case folders (<case>/<case>_t1.nii.gz, _t1ce, _t2, _flair, _seg for 2021; "
    "<case>-t1n, -t1c, -t2w, -t2f, -seg for 2023) or an MSD Task01 folder with dataset.json"
)


@dataclass(frozen=True)
class Case:
    """One subject: its four modality files (t1, t1ce, t2, flair order) and its label file.

    For the ``msd`` layout ``images`` holds the single 4-D image (FLAIR, T1w, t1gd, T2w
    channels); ``load_case`` splits and reorders it.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    layout: str

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        images = tuple(Path(p) for p in self.images)
        want = 1 if self.layout == "msd" else 4
        if len(images) != want:
            raise ValueError(f"a {self.layout} case has {want} image path(s), got {len(images)}")
        object.__setattr__(self, "images", images)
        if self.label is not None:
            object.__setattr__(self, "label", Path(self.label))

    @property
    def folder(self) -> Path:
        """The folder holding the case's first image."""
        return self.images[0].parent

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file of the case (images, then the label if any)."""
        return self.images + ((self.label,) if self.label is not None else ())


def _nifti_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise InputError(folder, f"cannot be read ({exc.strerror or exc}); check the path and permissions") from None
    return [p for p in entries if p.is_file() and not p.name.startswith(".") and is_nifti(p)]


def _strip_ext(name: str) -> str:
    return split_suffix(name, NIFTI_SUFFIXES)[0]


def case_files(folder: str | os.PathLike[str]) -> tuple[str, dict[str, Path]] | None:
    """Detect a BraTS case folder: ``(layout, {modality|"seg": path})`` or None if it is none.

    Raises :class:`InputError` when two files claim the same modality.
    """
    folder = Path(folder)
    files = _nifti_files(folder)
    best: tuple[str, dict[str, Path]] | None = None
    for layout, suffixes in _SUFFIXES.items():
        found: dict[str, Path] = {}
        for f in files:
            stem = _strip_ext(f.name).lower()
            for key, suffix in suffixes.items():
                if stem.endswith(suffix):
                    if key in found:
                        raise InputError(
                            f, f"and {found[key].name} both look like the {key} file of this case; keep only one"
                        )
                    found[key] = f
        if found and (best is None or len(found) > len(best[1])):
            best = (layout, found)
    return best


def _brats_case(folder: Path, layout: str, found: dict[str, Path], require_labels: bool) -> Case:
    suffixes = _SUFFIXES[layout]
    any_file = next(iter(found.values()))
    key0 = next(k for k, v in found.items() if v == any_file)
    prefix = _strip_ext(any_file.name)[: -len(suffixes[key0])]
    ext = split_suffix(any_file.name, NIFTI_SUFFIXES)[1]
    for key in (*MODALITIES, "seg"):
        if key in found or (key == "seg" and not require_labels):
            continue
        expected = folder / f"{prefix}{suffixes[key]}{ext}"
        what = "segmentation label" if key == "seg" else f"{key} modality"
        hint = (
            "add it, or run a command that does not need labels (e.g. fedimg predict)"
            if key == "seg"
            else "every case needs t1, t1ce, t2 and flair; add the file or remove the case folder"
        )
        raise InputError(expected, f"missing {what} ({layout} naming); {hint}")
    return Case(
        case_id=folder.name,
        images=tuple(found[m] for m in MODALITIES),
        label=found.get("seg"),
        layout=layout,
    )


def _norm_modality(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def _discover_msd(root: Path, require_labels: bool) -> list[Case]:
    meta_path = root / "dataset.json"
    meta = read_json(meta_path)
    if not isinstance(meta, dict):
        raise InputError(meta_path, "is not an MSD dataset.json (expected a JSON object with 'training')")
    modality = meta.get("modality")
    if modality is not None:
        try:
            names = tuple(_norm_modality(modality[str(i)]) for i in range(len(modality)))
        except (KeyError, TypeError):
            names = ()
        if names != tuple(_norm_modality(m) for m in MSD_CHANNELS):
            raise InputError(
                meta_path,
                f"modality {modality!r} is not the Task01_BrainTumour order "
                f"{dict(enumerate(MSD_CHANNELS))}; only that channel order is supported",
            )
    entries = meta.get("training", [])
    if not isinstance(entries, list):
        raise InputError(meta_path, "'training' must be a list of {'image': ..., 'label': ...}")
    items: list[tuple[str, str | None]] = []
    for e in entries:
        if not isinstance(e, dict) or "image" not in e:
            raise InputError(meta_path, f"training entry {e!r} has no 'image'; fix dataset.json")
        items.append((e["image"], e.get("label")))
    if not require_labels:
        items += [(t if isinstance(t, str) else t.get("image"), None) for t in meta.get("test", []) or []]
    cases: list[Case] = []
    for image, label in items:
        img_path = (root / image).resolve() if not Path(image).is_absolute() else Path(image)
        lab_path = None if label is None else (root / label).resolve()
        if not img_path.is_file():
            raise InputError(img_path, "is listed in dataset.json but missing; restore it or fix dataset.json")
        if lab_path is not None and not lab_path.is_file():
            if require_labels:
                raise InputError(lab_path, "is listed in dataset.json but missing; restore it or fix dataset.json")
            lab_path = None
        if lab_path is None and require_labels:
            raise InputError(img_path, "has no label in dataset.json; add one or run a command that needs no labels")
        cases.append(Case(case_id=_strip_ext(img_path.name), images=(img_path,), label=lab_path, layout="msd"))
    return cases


def _looks_like_a_case(folder: Path) -> bool:
    """An empty folder, or one holding NIfTI files (not BraTS-named), is a (bad) case folder;
    one holding only other files or sub-folders (notes, a folder of cases) is not."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return not entries or bool(_nifti_files(folder))


def _looks_like_sites(root: Path) -> Path | None:
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for case_dir in sorted(p for p in sub.iterdir() if p.is_dir()):
            if case_files(case_dir):
                return sub
    return None


def discover(
    root: str | os.PathLike[str], *, require_labels: bool = True, allow_identifiable: bool = True,
    skipped: list[InputError] | None = None,
) -> list[Case]:
    """All cases under ``root``, sorted by case id; the layout is detected.

    ``require_labels``: every case must have a segmentation (training, evaluation).
    ``skipped``: skip bad BraTS case folders (empty, missing a file) and append their errors
    to this list instead of raising (``--skip-bad-cases``; the caller reports them).
    ``allow_identifiable=False``: refuse any image without a defacing record whose content
    hash matches the image (:func:`fedimg.imageio.provenance.defacing_problem`; a header tag
    alone, an edited image or a record copied from another file is refused).
    Raises :class:`InputError` naming the file or folder for a missing folder, an empty
    folder or case folder, a missing modality or label, or an identifiable image.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(root, "does not exist; pass a data folder")
    if not root.is_dir():
        raise InputError(root, f"is a file, not a data folder; {_LAYOUT_HELP}")
    if (root / "dataset.json").is_file():
        cases = _discover_msd(root, require_labels)
    elif (single := case_files(root)) is not None:
        cases = [_brats_case(root, single[0], single[1], require_labels)]
    else:
        cases = []
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                found = case_files(sub)
                if found is None:
                    if not _looks_like_a_case(sub):
                        log.debug("skipping %s: neither a case folder nor empty", sub)
                        continue
                    raise InputError(sub, "is an empty case folder (no BraTS-named NIfTI files); add the case's "
                                          "files or remove the folder")
                cases.append(_brats_case(sub, found[0], found[1], require_labels))
            except InputError as exc:
                if skipped is None:
                    raise
                log.info("bad case folder %s", exc)
                skipped.append(exc)
    if not cases and skipped:
        raise InputError(root, f"holds no usable case: all {len(skipped)} case folder(s) are bad, e.g. {skipped[0]}")
    if not cases:
        site = _looks_like_sites(root)
        hint = f"; it looks like a folder of sites, pass one site, e.g. {site}" if site else ""
        raise InputError(root, f"contains no cases; {_LAYOUT_HELP}{hint}")
    if not allow_identifiable:
        for case in cases:
            for img in case.images:
                problem = defacing_problem(img)
                if problem is not None:
                    raise InputError(img, problem)
    cases.sort(key=lambda c: c.case_id)
    log.debug("found %d %s case(s) under %s", len(cases), cases[0].layout, root)
    return cases


def msd_image_case(path: str | os.PathLike[str]) -> Case:
    """One MSD Task01 4-D image (channels FLAIR, T1w, t1gd, T2w) as an unlabelled case.

    The header is checked (4-D with 4 channels, size limit) before anything is read.
    """
    from fedimg.imageio.nifti import open_nifti, spatial_shape

    path = Path(path)
    if not is_nifti(path):
        raise InputError(path, "is not a NIfTI file; pass a BraTS case folder or an MSD 4-D image (.nii.gz)")
    spatial_shape(open_nifti(path), path, MSD_CHANNELS)
    return Case(case_id=_strip_ext(path.name), images=(path,), label=None, layout="msd")
