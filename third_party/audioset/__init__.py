"""Marks this folder as the package `audiotl_jax.resources.audioset` when installed (see setup.py)."""
