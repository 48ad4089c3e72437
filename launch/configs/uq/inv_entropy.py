"""Inv-Entropy and the UQ baselines with a local model (spec section 9).

  python -m jaxsys.launch.uq --config=launch/configs/uq/inv_entropy.py --workdir=/tmp/uq
  python -m jaxsys.launch.uq --config=launch/configs/uq/inv_entropy.py:smoke --workdir=/tmp/uq

SmolLM2-135M-Instruct (our JAX Llama) answers each question and its n perturbations r times;
all-MiniLM-L6-v2 embeds every text; Inv-Entropy, its variants and every baseline score each
question; the greedy answer is labelled. Reports AUROC / PRR / paper PRR (AP) / isotonic Brier
with bootstrap std per estimator and dataset, and TSU over the temperatures. Generations are
cached in the workdir: a rerun (or a new estimator) only rescores. Expected (paper, GPT-3.5):
Inv-Entropy first by AUROC on most datasets; with a 135M model the absolute numbers are lower
and a dataset with few right answers is marked low power.

`:smoke` (seconds): 8 arithmetic questions, template perturbations, n = 3, r = 2, B = 4.
`:quick` (the `make demo` setting, minutes): 40 arithmetic questions, GAAP, n = 5, r = 3.
"""

import ml_collections


def get_config(arg: str = ""):
  c = ml_collections.ConfigDict()
  c.experiment = "uq"
  # datasets: "reasoning_gym:<task>", "nq_open" or "gsm8k" (the latter read from data_dir)
  c.datasets = ("reasoning_gym:basic_arithmetic", "nq_open", "gsm8k")
  c.data_dir = "../shared/data"
  c.questions = 100
  # grow the sample (doubling) until this many greedy answers are right: SmolLM2-135M gets
  # about 1 in 20 NQ-open questions, so NQ-open runs on ~400
  c.min_correct = 20
  # basic_arithmetic at a difficulty SmolLM2-135M gets right about half the time (measured:
  # 23 of 40 greedy answers right, judged by their last number)
  c.rg_options = ml_collections.ConfigDict(
    {
      "min_terms": 2,
      "max_terms": 2,
      "min_digits": 1,
      "max_digits": 1,
      "operators": ("+", "-"),
      "allow_negation": False,
      "allow_parentheses": False,
    }
  )
  c.backend = "local"  # or "openai"
  c.model = "smollm2"  # local: "smollm2" or a Hugging Face folder; openai: the served model name
  c.base_url = ""  # openai backend
  c.perturber = "gaap"  # "gaap", "llm_paraphrase" or "template"
  c.n, c.r, c.r0 = 9, 5, 10
  c.temperature = 0.7
  c.num_bootstrap = 30
  c.eval_bootstrap = 40
  c.tsu_temperatures = (0.3, 0.7, 1.0, 1.4)  # () skips TSU
  c.tsu_questions = 100  # TSU on the first 100 questions of each dataset (0: all)
  c.estimators = ()  # () = every estimator the inputs support
  c.seed = 0
  if arg == "quick":
    c.datasets = ("reasoning_gym:basic_arithmetic",)
    c.questions, c.n, c.r, c.r0 = 40, 5, 3, 6
    c.min_correct = 0
    c.tsu_temperatures = (0.3, 1.4)
    c.num_bootstrap, c.eval_bootstrap = 20, 20
  elif arg == "smoke":
    c.datasets = ("reasoning_gym:basic_arithmetic",)
    c.questions, c.n, c.r, c.r0 = 8, 3, 2, 5
    c.min_correct = 0
    c.perturber = "template"
    c.tsu_temperatures = ()
    c.num_bootstrap, c.eval_bootstrap = 4, 5
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; use '', 'quick' or 'smoke'")
  return c
