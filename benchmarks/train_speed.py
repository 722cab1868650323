"""Train-step and sampler speed on this machine's devices, printed as JSON.

  python benchmarks/train_speed.py [--steps=5]

For each config: compile seconds of the train step, steps/s, video tokens/s, and sampler seconds
per denoising step (cfg batch included). Synthetic batches, so no dataset is needed.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import toy  # noqa: E402
from vdit.parallel import sharding  # noqa: E402
from vdit.training import train_state
from vdit.model import factory
from vdit.diffusion.generation import VideoSampler  # noqa: E402
from vdit.text.tokenizer import Tokenizer  # noqa: E402
from vdit.training.dit_trainer import build_train_step  # noqa: E402


def toy_config():
  config = toy.get_config()
  with config.unlocked():
    config.sample.num_frames, config.sample.height, config.sample.width = 8, 32, 32
  return config


def mid_config():
  """A mid-size model: dim 384, 8 blocks, 8 frames at 64x64 in (2,4,4) tubelets = 1024 tokens."""
  config = toy.get_config()
  with config.unlocked():
    config.sample.height = config.sample.width = 64
    config.sample.num_frames = 8
    config.model.remat = "full"
    config.model.patch_size = (2, 4, 4)
    config.model.dim, config.model.depth, config.model.num_heads, config.model.mlp_ratio = 384, 8, 6, 4.0
    config.text.dim, config.text.depth = 256, 2
    config.train.global_batch_size = 4
  return config


def bench(name, config, steps):
  mesh = sharding.make_mesh({"data": -1})
  tokenizer = Tokenizer(config.text.max_length)
  tx = train_state.make_optimizer(config.optim, 1000)
  state = train_state.create_state(config, mesh, tx, jax.random.key(0))
  step = build_train_step(config, mesh, tx, tokenizer)
  d, b = config.sample, config.train.global_batch_size
  rng = np.random.default_rng(0)
  tokens, mask = tokenizer.encode_batch(["a red circle moving left"] * b)
  batch = {"video": rng.integers(0, 256, (b, d.num_frames, d.height, d.width, 3), dtype=np.uint8),
           "tokens": tokens, "text_mask": mask}
  batch = {k: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
  with jax.set_mesh(mesh):
    t0 = time.perf_counter()
    state, metrics = step(state, batch, jax.random.key(0))
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
      state, metrics = step(state, batch, jax.random.key(i + 1))
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t0) / steps

  graphdef, _ = factory.abstract_model(config)
  sampler = VideoSampler(graphdef, state["ema"], tokenizer, mesh=mesh)
  opts = dict(num_frames=d.num_frames, height=d.height, width=d.width, channels=3,
              patch_size=config.model.patch_size, cfg=3.0)
  prompts = ["a red circle moving left"] * 4
  jax.block_until_ready(sampler.generate(prompts, range(4), steps=1, **opts))  # compile
  t0 = time.perf_counter()
  jax.block_until_ready(sampler.generate(prompts, range(4), steps=steps, **opts))
  sample_step_s = (time.perf_counter() - t0) / steps

  m = config.model
  tokens_per_clip = (d.num_frames // m.patch_size[0]) * (d.height // m.patch_size[1]) * (d.width // m.patch_size[2])
  params = sum(x.size for x in jax.tree.leaves(state["params"]))
  return {"config": name, "params": int(params), "batch": b, "tokens_per_clip": tokens_per_clip,
          "compile_s": round(compile_s, 2), "train_steps_per_s": round(1 / step_s, 3),
          "train_tokens_per_s": round(b * tokens_per_clip / step_s, 1),
          "sampler_s_per_step_4_videos_cfg": round(sample_step_s, 4)}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  results = [bench("toy", toy_config(), args.steps), bench("mid", mid_config(), max(2, args.steps // 2))]
  print(json.dumps({"device": jax.devices()[0].device_kind, "num_devices": jax.device_count(),
                    "results": results}, indent=2))


if __name__ == "__main__":
  main()
