from audiotl_jax.main import run

if __name__ == "__main__":
  run()
