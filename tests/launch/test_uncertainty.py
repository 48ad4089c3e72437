import numpy as np

from jaxsys.launch import uncertainty


def test_tsu_covers_the_spec_pairs_and_chains():
  rng = np.random.default_rng(0)
  base = rng.normal(size=30)
  rising = [{"degmat": base + t} for t in range(4)]  # every question rises with temperature
  table = uncertainty._tsu(rising, (0.3, 0.7, 1.0, 1.4))["degmat[emb]"]
  pairs = ["(0.3,0.7)", "(0.3,1.0)", "(0.3,1.4)", "(0.7,1.0)", "(0.7,1.4)", "(1.0,1.4)"]
  assert list(table) == [*pairs, "0.3-1.0", "0.7-1.4", "0.3-1.4"]
  assert all(row["tsu"] == 100.0 for row in table.values())
  assert table["0.3-1.4"]["chance"] == 100.0 / 24
  flat = [{"degmat": base} for _ in range(4)]  # ties never count
  assert all(
    r["tsu"] == 0.0 for r in uncertainty._tsu(flat, (0.3, 0.7, 1.0, 1.4))["degmat[emb]"].values()
  )
