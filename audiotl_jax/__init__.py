"""audiotl-jax: audio transfer-learning scaling studies in JAX/Flax."""

__version__ = "0.1.0"
