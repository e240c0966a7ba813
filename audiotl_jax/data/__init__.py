"""Data layer: dataset readers, prepare (to ArrayRecord), synthetic data and Grain pipelines."""
