"""Packages and the data folders mapped into them; everything else is in pyproject.toml.

`configs/` and `third_party/audioset/` stay at the top of the repository, where users read them,
and are installed as `audiotl_jax.resources.configs` and `audiotl_jax.resources.audioset`
(`audiotl_jax/resources/__init__.py` finds them), so a non-editable install works from anywhere.
"""
from setuptools import find_packages, setup

MAPPED = {
    "audiotl_jax.resources.configs": "configs",
    "audiotl_jax.resources.configs.sweeps": "configs/sweeps",
    "audiotl_jax.resources.configs.studies": "configs/studies",
    "audiotl_jax.resources.audioset": "third_party/audioset",
}

setup(
    packages=find_packages(include=["audiotl_jax", "audiotl_jax.*"]) + list(MAPPED),
    package_dir=MAPPED,
    package_data={"audiotl_jax": ["py.typed"],
                  "audiotl_jax.resources.configs": ["*.py"],
                  "audiotl_jax.resources.configs.sweeps": ["*.py"],
                  "audiotl_jax.resources.configs.studies": ["*.py"],
                  "audiotl_jax.resources.audioset": ["*.csv", "*.json", "*.md", "LICENSE*"]},
)
