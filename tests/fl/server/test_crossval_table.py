"""The cross-site validation table and heatmap writer shared by simulate/poc and exported jobs."""

from __future__ import annotations

import json
import math

from fedimg.fl.server.crossval_table import write_crossval


def test_table_rows_columns_mean_and_missing_cells(tmp_path):
    res = {"global": {"site-1": {"dice_mean": 0.5}, "site-2": {"dice_mean": 0.7}},
           "local site-1": {"site-1": {"dice_mean": 0.9}}}  # site-2's evaluation of it never arrived
    out = write_crossval(tmp_path / "cv", res, ["site-1", "site-2"], "dice_mean")
    rows = [line.split(",") for line in (tmp_path / "cv" / "crossval.csv").read_text().splitlines()]
    assert rows[0] == ["model", "site-1", "site-2", "mean"]
    assert rows[1] == ["global", "0.5000", "0.7000", "0.6000"]
    assert rows[2][0] == "local site-1" and rows[2][1] == "0.9000" and math.isnan(float(rows[2][2]))
    assert rows[2][3] == "0.9000"  # the mean of the cells that exist, the missing one shown as nan
    doc = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    assert doc == {"key_metric": "dice_mean", "sites": ["site-1", "site-2"], "results": res}
    assert (tmp_path / "cv" / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["csv"] == str(tmp_path / "cv" / "crossval.csv")
    assert sorted(p.name for p in (tmp_path / "cv").iterdir()) == ["crossval.csv", "crossval.json", "heatmap.png"]
