"""Does `--edit --strength=S` keep as much of the input as S says? An independent probe of a toy model.

  python benchmarks/toy_edit_probe.py --workdir=runs/toy [--strengths=0.05,0.2,0.5,0.8]

Renders 16 toy clips (4 colours x 3 shapes x 2 directions, fixed seed), edits each under its own
caption at every strength with the model's sample settings, and prints JSON: the mean PSNR (dB,
uint8 frames) of the edited video to its input per strength. A model that reconstructs what it is
given scores high at low strength and falls as strength grows.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _psnr(a, b) -> float:
  import numpy as np
  mse = np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2, axis=(1, 2, 3, 4))
  return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


def probe(workdir: str, strengths) -> dict:
  import numpy as np
  from vdit.config import pretrained
  from vdit.diffusion.generation import VideoSampler
  from vdit.diffusion.options import SampleOptions
  from vdit.media import pixels
  from vdit.model import factory
  from vdit.parallel import sharding
  from vdit.text import conditioner
  from vdit.toy import spec, world

  mesh = sharding.make_mesh({"data": -1})
  config = pretrained.load_config(workdir)
  with pretrained.Checkpoints(workdir, config, mesh) as checkpoints:
    step, = checkpoints.select(None)
    params = checkpoints.restore(step)
  sampler = VideoSampler(factory.abstract_model(config)[0], params, conditioner.for_sampling(config, mesh), mesh=mesh)
  s = config.sample
  rng = np.random.default_rng(0)
  clips, captions = [], []
  for colour in ("red", "blue", "green", "yellow"):
    for shape in spec.SHAPES:
      for direction in ("left", "up"):
        start, speed, radius = world.sample_motion(rng, direction, num_frames=s.num_frames, height=s.height,
                                                   width=s.width)
        clips.append(world.render_clip(colour, shape, direction, start=start, speed=speed, radius=radius,
                                       num_frames=s.num_frames, height=s.height, width=s.width))
        captions.append(spec.caption(colour, shape, direction))
  clips = np.stack(clips[:16])
  captions = captions[:16]
  opts = dict(num_frames=s.num_frames, height=s.height, width=s.width, channels=config.model.in_channels,
              patch_size=config.model.patch_size, **SampleOptions.from_section(s).generate_kwargs())
  init = pixels.to_model_space(clips)
  rows = {}
  for strength in strengths:
    videos = sampler.generate(captions, list(range(len(captions))), init_video=init, strength=strength, **opts)
    rows[str(strength)] = round(_psnr(np.asarray(pixels.to_uint8(sharding.to_host(videos))), clips), 2)
  return {"workdir": workdir, "step": int(step), "cfg": opts["cfg"], "steps": opts["steps"],
          "edit_psnr_own_caption_db": rows}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--strengths", default="0.05,0.2,0.5,0.8")
  args = parser.parse_args()
  if not os.path.isfile(os.path.join(args.workdir, "config.json")):
    sys.exit(f"error: --workdir={args.workdir} has no config.json; pass a trained toy workdir")
  print(json.dumps(probe(args.workdir, [float(s) for s in args.strengths.split(",")])))


if __name__ == "__main__":
  main()
