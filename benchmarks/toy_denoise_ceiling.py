"""How well does a trained toy model give back a clean clip it is handed almost clean?

  python benchmarks/toy_denoise_ceiling.py --workdir=runs/toy --data=runs/toy_eval_data \
      [--out=benchmarks/results/toy_denoise_ceiling_cpu.json]

Takes 64 eval clips (their first `sample.num_frames` frames), noises each to time t (x_t =
(1 - t) x_0 + t eps, one fixed noise draw), and scores the model's one-step estimate of the
clean clip, x_0 = x_t - t v(x_t, t) under the clip's own caption, by PSNR to the clip (frames
in [-1, 1], peak-to-peak 2), beside the PSNR of x_t itself. A model that has learnt the clips
gives back more than it was given at every t, and nearly the clip itself as t -> 0. Where its
estimate stops improving as t falls is the most any sampler, edit (`--strength`) or extension
can keep of a given video with this model.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import results_io  # noqa: E402  (benchmarks/, on sys.path as the script's directory)

_TIMES = (0.05, 0.08, 0.12, 0.2, 0.3, 0.5, 0.7, 0.9)


def _psnr(a, b) -> float:
  import numpy as np
  return float(10 * np.log10(4.0 / np.mean((np.clip(a, -1, 1) - b) ** 2)))


def measure(workdir: str, data: str, num_clips: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from vdit.config import pretrained
  from vdit.data import dataset_files
  from vdit.media import pixels
  from vdit.model import factory
  from vdit.parallel import sharding
  from vdit.text import conditioner

  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  config = pretrained.load_config(workdir)
  with pretrained.Checkpoints(workdir, config, mesh) as checkpoints:
    step, = checkpoints.select(None)
    params = checkpoints.restore(step)
  graphdef = factory.abstract_model(config)[0]
  clips = dataset_files.read_clips(data, limit=num_clips)
  x0 = pixels.to_model_space(np.stack([c["frames"][:config.sample.num_frames] for c in clips]))
  tokens, mask = conditioner.for_sampling(config, mesh).encode_batch([c["caption"] for c in clips])

  @jax.jit
  def clean_estimate(params, x, t):
    model = nnx.merge(graphdef, params)
    return x - t[:, None, None, None, None] * model.velocity(x, t, model.encode_text(tokens, mask), mask)

  noise = np.random.default_rng(0).standard_normal(x0.shape).astype(np.float32)
  rows = []
  for t in _TIMES:
    xt = (1 - t) * x0 + t * noise
    estimate = np.asarray(clean_estimate(params, jnp.asarray(xt), jnp.full((len(clips),), t, jnp.float32)))
    rows.append({"t": t, "estimate_psnr_db": round(_psnr(estimate, x0), 2), "input_psnr_db": round(_psnr(xt, x0), 2)})
  return {"workdir": workdir, "step": int(step), "num_clips": len(clips), "prediction": config.model.prediction,
          "patch_size": list(config.model.patch_size), "rows": rows}


def markdown(result) -> str:
  lines = [f"{result['workdir']} (step {result['step']}, {result['num_clips']} clips, "
           f"patch {'x'.join(map(str, result['patch_size']))}):", "",
           "| t | PSNR of the model's clean estimate (dB) | PSNR of x_t (dB) |", "|---|---|---|"]
  lines += [f"| {r['t']} | {r['estimate_psnr_db']:.2f} | {r['input_psnr_db']:.2f} |" for r in result["rows"]]
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default="runs/toy")
  parser.add_argument("--data", default="runs/toy_eval_data")
  parser.add_argument("--num_clips", type=int, default=64)
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "toy_denoise_ceiling_cpu.json"))
  args = parser.parse_args()
  for path, what in ((os.path.join(args.workdir, "config.json"), "--workdir"), (args.data, "--data")):
    if not os.path.exists(path):
      sys.exit(f"error: {path} ({what}) does not exist; run `bash launch/toy_demo.sh` first (it trains runs/toy "
               "and makes runs/toy_eval_data)")
  result = measure(args.workdir, args.data, args.num_clips)
  results_io.write(args.out, result, markdown(result))


if __name__ == "__main__":
  main()
