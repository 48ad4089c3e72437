"""jaxsys: ML-systems papers as jittable JAX functions."""

import setuptools

_FOLDERS = ("lib", "algorithms", "scheduling", "systems", "launch")


def _packages():
  packages = []
  for folder in _FOLDERS:
    for sub in setuptools.find_packages(folder):
      packages.append(f"jaxsys.{folder}.{sub}")
    packages.append(f"jaxsys.{folder}")
  return packages


setuptools.setup(
  name="jaxsys",
  version="0.1.0",
  description="ML-systems research papers as reusable, jittable JAX functions.",
  python_requires=">=3.11",
  packages=_packages(),
  package_dir={f"jaxsys.{folder}": folder for folder in _FOLDERS},
  install_requires=[
    "jax>=0.10.0",
    "flax>=0.12.0",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.0",
    "chex>=0.1.90",
    "absl-py>=2.1",
    "ml-collections>=1.0",
    "numpy>=2.0",
    "matplotlib>=3.9",
  ],
  extras_require={
    # Real local models (lib/models): GGUF dequantisation, tokenizers, safetensors weights.
    "models": ["gguf>=0.10", "tokenizers>=0.20", "safetensors>=0.4"],
    # Uncertainty family: the above plus reasoning-gym's generators and scorers.
    "uq": ["gguf>=0.10", "tokenizers>=0.20", "safetensors>=0.4", "reasoning-gym>=0.1.20"],
    "test": [
      "pytest>=8",
      "hypothesis>=6.100",
      "ruff>=0.6",
      "nbclient>=0.10",
      "nbformat>=5.10",
      "ipykernel>=6.29",
      "pytest-xdist>=3.5",
    ],
  },
)
