"""Training: mesh and shardings, train state, checkpointing, metrics, the pretrain and finetune loops."""
