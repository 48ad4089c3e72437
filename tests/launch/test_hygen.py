"""The HyGen reproduction at its smoke size: runs, writes its figures and a report table."""

import os
import re

from jaxsys.launch import hygen
from jaxsys.launch.configs.serving import hygen_colocation


def test_hygen_smoke_writes_report(tmp_path):
  config = hygen_colocation.get_config("smoke")
  summary = hygen.run(config, str(tmp_path))
  assert 0.0 < summary["mape_heldout"] < 0.08
  rows = summary["rows"]
  assert set(rows) == set(hygen.POLICIES)
  # online-only runs no offline work; co-located policies do
  assert rows["sarathi"]["offline_tokens_s"] == 0.0
  assert rows["sarathi++"]["offline_tokens_s"] > 0.0
  # every fresh slice is evaluated; the headline row takes the worst ratio over them
  assert [sl["seed"] for sl in summary["slices"]] == list(config.fresh_seeds)
  worst = max(sl["rows"]["hygen"]["tbt_mean_ratio"] for sl in summary["slices"])
  assert rows["hygen"]["tbt_mean_ratio"] == worst
  text = hygen.report_markdown(summary, config)
  assert "## HyGen" in text and "| hygen |" in text and "| hygen* |" in text
  assert text.count("| 2 | ") + text.count("| 3 | ") == 2  # the per-slice rows
  figures = re.findall(r"\]\(([^)]+\.png)\)", text)
  assert len(figures) >= 5 and "hygen_frontier.png" in figures
  # PSM lanes: every memory size x (psm, fcfs, no_sharing); sharing hits only where it is on
  psm = summary["psm"]["rows"]
  assert len(psm) == 3 * len(config.psm_hbm_gb)
  for r in psm:
    assert (r["prefix_hits"] > 0) == (r["order"] != "no_sharing"), r
  assert "PSM / FCFS offline req/s" in text
  for fig in figures:
    assert os.path.getsize(tmp_path / fig) > 1000, fig
  assert (tmp_path / "metrics.jsonl").exists() and (tmp_path / "results.json").exists()
