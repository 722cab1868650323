"""Experiment configs made ready to run, at the boundary: checked, completed from the data where the
config leaves a value to it, and frozen into the Experiment services take (vdit.config.experiment).
"""
from vdit.config import config_io, experiment
from vdit.core.errors import ConfigError
from vdit.data import bucket_plan, dataset_files
from vdit.text.tokenizer import Tokenizer
from vdit.vae import latents


def plan_buckets(config, batch_multiple: int):
  """The dataset's buckets with batch sizes and step shares (vdit.data.bucket_plan)."""
  d = config.data
  metadata = dataset_files.read_metadata(d.dir)
  return bucket_plan.plan(metadata["buckets"], patch_size=tuple(config.model.patch_size),
                          global_batch_size=config.train.global_batch_size,
                          tokens_per_batch=d.tokens_per_batch, batch_multiple=batch_multiple,
                          max_frames=d.num_frames, image_ratio=d.image_ratio)


def _checked(config, platform=None):
  """A validated, unlocked copy (references resolved) that the functions below may complete;
  `platform` is the target's (default: this machine's)."""
  if experiment.is_frozen(config):
    config = experiment.thaw(config)
  config = config.copy_and_resolve_references()
  config_io.validate(config, platform)
  if config.train.grad_accum_steps < 1:
    raise ConfigError(f"config.train.grad_accum_steps={config.train.grad_accum_steps} must be >= 1.")
  if config.text.encoder == "trainable" and not config.text.vocab_size:
    with config.unlocked():  # 0: the shipped tokenizer's size
      config.text.vocab_size = Tokenizer.shipped_vocab_size()
  return config


def for_compile(config, platform=None):
  """A config checked for compiling its train step for `platform` (no data needed): the Experiment."""
  return experiment.freeze(_checked(config, platform))


def for_training(config):
  """A config checked against its data and completed from it (recorded in the workdir's config.json):
  the default sample size is the most common video bucket (in pixels also for a latent cache), and
  the data must be what the config trains on (pixels, or latents of the configured VAE)."""
  config = _checked(config)
  space = latents.from_config(config)
  latents.check_cache(config, dataset_files.read_metadata(config.data.dir), config.data.dir)
  buckets = plan_buckets(config, batch_multiple=1)
  videos = [b for b in buckets if not b.is_image] or buckets
  common = max(videos, key=lambda b: b.num_clips)
  frames, height, width = space.pixel_size(common.frames, common.height, common.width)
  s = config.sample
  with config.unlocked():
    s.num_frames, s.height, s.width = s.num_frames or frames, s.height or height, s.width or width
  config_io.check_video_size(config, *space.model_shape(s.num_frames, s.height, s.width)[:3], "config.sample size")
  return experiment.freeze(config)
