"""Training: run settings, device decisions, the two-stage schedule, the fine-tuner, repeated-split
experiments and restoring a finished run."""
