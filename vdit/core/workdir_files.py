"""The names of what a workdir holds, in one place (every trainer, sampler and converter agrees)."""
import os

CONFIG_FILE = "config.json"  # the resolved config: what sampling and evaluation rebuild the model from
METRICS_FILE = "metrics.jsonl"  # one JSON record per logged step
CHECKPOINTS_DIR = "checkpoints"  # Orbax steps (vdit.core.checkpoint)
VAE_FILE = "vae.safetensors"  # a VAE trainer's export; a converted release's VAE
LOCK_FILE = "lock.json"  # the trainer using the workdir: host, pid, start, heartbeat (training.workdir_lock)


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)
