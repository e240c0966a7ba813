from audiotl_jax.cli import run

if __name__ == "__main__":
  run()
