"""lib/config.py: loading `file.py:arg`, validation errors, JSON dumps."""

import json
import textwrap

import ml_collections
import numpy as np
import pytest

from jaxsys.lib import config as config_lib

CONFIG_FILE = textwrap.dedent(
  '''
  """A test config."""
  import ml_collections

  def get_config(arg: str = ""):
    c = ml_collections.ConfigDict()
    c.steps = 1000
    c.rates = (0.5, 1.0)
    c.policy = "fcfs"
    c.model = ml_collections.ConfigDict({"layers": 4})
    if arg == "smoke":
      c.steps = 10
    elif arg:
      raise ValueError(f"unknown arg {arg!r}")
    c.lock()
    return c
  '''
)


@pytest.fixture
def config_path(tmp_path):
  path = tmp_path / "configs" / "family" / "exp.py"
  path.parent.mkdir(parents=True)
  path.write_text(CONFIG_FILE)
  return str(path)


def test_load_default_and_smoke(config_path):
  full = config_lib.load(config_path)
  smoke = config_lib.load(config_path + ":smoke")
  assert full.steps == 1000 and smoke.steps == 10
  assert smoke.model.layers == 4
  with pytest.raises(ValueError, match="unknown arg 'nope'"):
    config_lib.load(config_path + ":nope")


def test_load_module_spec():
  c = config_lib.load("jaxsys.launch.configs.serving.tempo_load_sweep:smoke")
  assert c.seeds == 1


def test_load_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    config_lib.load(str(tmp_path / "missing.py:smoke"))
  bad = tmp_path / "bad.py"
  bad.write_text("x = 1\n")
  with pytest.raises(ValueError, match="no get_config"):
    config_lib.load(str(bad))


def test_split_spec():
  assert config_lib.split_spec("a/b.py:smoke") == ("a/b.py", "smoke")
  assert config_lib.split_spec("a/b.py:runlocal,res=128") == ("a/b.py", "runlocal,res=128")
  assert config_lib.split_spec("a/b.py") == ("a/b.py", "")
  assert config_lib.split_spec("pkg.mod:quick") == ("pkg.mod", "quick")


def test_require(config_path):
  c = config_lib.load(config_path)
  assert config_lib.require(c, "steps", lambda v: v > 0) == 1000
  assert config_lib.require(c, "model.layers", lambda v: v > 0) == 4
  assert config_lib.require(c, "policy", ("fcfs", "edf")) == "fcfs"
  with pytest.raises(ValueError, match=r"config\.steps=1000: must be below 100"):
    config_lib.require(c, "steps", lambda v: v < 100, "must be below 100")
  with pytest.raises(ValueError, match=r"config\.policy='fcfs': must be one of \['edf'\]"):
    config_lib.require(c, "policy", ["edf"])
  with pytest.raises(ValueError, match=r"config\.policy='fcfs': failed the check"):
    config_lib.require(c, "policy", lambda v: v > 0)  # the predicate raises TypeError
  with pytest.raises(ValueError, match=r"no field 'model\.depth'"):
    config_lib.require(c, "model.depth", lambda v: True)


def test_to_dict_is_json(config_path):
  c = config_lib.load(config_path)
  c.unlock()
  c.array = np.arange(3)
  c.scalar = np.float32(0.5)
  d = config_lib.to_dict(c)
  assert json.loads(json.dumps(d)) == {
    "steps": 1000,
    "rates": [0.5, 1.0],
    "policy": "fcfs",
    "model": {"layers": 4},
    "array": [0, 1, 2],
    "scalar": 0.5,
  }
  frozen = ml_collections.FrozenConfigDict(config_lib.load(config_path))
  assert config_lib.to_dict(frozen)["rates"] == [0.5, 1.0]
