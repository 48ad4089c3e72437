"""The serving benchmark's policy sweeps run, and their jitted lanes equal the reference."""

from jaxsys.launch import benchmark


def test_policy_sweeps_quick_agree_with_reference():
  result = benchmark.policy_sweeps(quick=True)
  disco = result["disco_budget"]
  assert disco["configs"] == 3 and disco["requests"] == 200
  assert disco["max_ttft_diff_vs_reference_s"] < 1e-9
  cache = result["echolm_cache_size"]
  assert cache["chosen_examples_equal_reference"]
  for r in result.values():
    assert r["jit_s"] > 0 and r["reference_s"] > 0 and r["compile_s"] >= 0
