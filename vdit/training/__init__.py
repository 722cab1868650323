"""Training: the one loop (sharded state, steps, checkpoints, metrics, periodic eval, preemption) and the trainers built on it (DiT, VAE)."""
