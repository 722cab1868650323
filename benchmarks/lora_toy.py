"""LoRA teaches the toy model a colour it never saw: the toy judge on the new colour's prompts and on
the base world's, with and without the adapter, plus the adapter's size and training time.

  python -m data_prep.toy_world --output=runs/purple_data --colours=purple --num_clips=1024 --num_held_out=3
  python -m vdit.finetune --base=runs/toy --workdir=runs/toy_purple --config=configs/finetune_toy.py
  python benchmarks/lora_toy.py --base=runs/toy --base_data=runs/toy_data --lora_workdir=runs/toy_purple \
      --new_data=runs/purple_data [--out=benchmarks/results/lora_toy_cpu.json]

Rows: the base and base + adapter, each judged (colour, shape, direction) on the new colour's held-out
and seen combinations and on the base world's held-out and seen prompts (data_prep.toy_prompts),
every setting with the same prompts and seeds at the base's sample settings.
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import results_io  # noqa: E402  (benchmarks/, on sys.path as the script's directory)


def _held_out(data_dir: str) -> set:
  with open(os.path.join(data_dir, "held_out.json")) as f:
    return {tuple(c) for c in json.load(f)["combinations"]}


def _accuracy(verdicts: list) -> dict:
  return {k: round(sum(v[f"{k}_ok"] for v in verdicts) / len(verdicts), 4) for k in ("colour", "shape", "direction")}


def markdown(rows: list) -> str:
  pct = lambda v: f"{100 * v:.0f}%"
  lines = ["| model | new colour held-out (colour / shape / direction) | new colour seen | base held-out "
           "(colour / shape / direction) | base seen |", "|---|---|---|---|---|"]
  for r in rows:
    cells = [" / ".join(pct(r[split][k]) for k in ("colour", "shape", "direction"))
             for split in ("new_held_out", "new_seen", "base_held_out", "base_seen")]
    lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--base", required=True)
  parser.add_argument("--base_data", required=True)
  parser.add_argument("--lora_workdir", required=True, help="A vdit.finetune workdir (adapter.safetensors).")
  parser.add_argument("--new_data", required=True, help="The new concept's toy world (held_out.json).")
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "lora_toy_cpu.json"))
  parser.add_argument("--repeats", type=int, default=8, help="Videos per new-colour combination.")
  parser.add_argument("--batch_size", type=int, default=32)
  args = parser.parse_args()

  import jax
  import numpy as np
  from vdit.config import pretrained
  from vdit.diffusion.generation import VideoSampler
  from vdit.diffusion.options import SampleOptions
  from vdit.interop.wan import lora_weights
  from vdit.media import pixels
  from vdit.model import factory
  from vdit.parallel import sharding
  from vdit.text import conditioner
  from vdit.toy import judge, prompts as toy_prompts, spec as toy_spec

  mesh = sharding.make_mesh({"data": -1})
  config = pretrained.load_config(args.base)
  with pretrained.Checkpoints(args.base, config, mesh) as checkpoints:
    step, = checkpoints.select(None)
    base_params = checkpoints.restore(step)
  adapter = os.path.join(args.lora_workdir, "adapter.safetensors")
  adapted = lora_weights.apply(base_params, [(adapter, 1.0)])
  sampler = VideoSampler(factory.abstract_model(config)[0], base_params, conditioner.for_sampling(config, mesh),
                         mesh=mesh)
  new_colours = [c for c in toy_spec.NEW_COLOURS if any(c == h[0] for h in _held_out(args.new_data))]
  new_captions = [toy_spec.caption(*c) for c in toy_spec.all_combinations(tuple(new_colours))] * args.repeats
  base_captions = list(toy_prompts.eval_prompts(args.base_data, repeats=args.repeats))
  splits = {"new": (new_captions, _held_out(args.new_data)), "base": (base_captions, _held_out(args.base_data))}
  s = config.sample
  opts = dict(num_frames=s.num_frames, height=s.height, width=s.width, channels=config.model.in_channels,
              patch_size=config.model.patch_size, **SampleOptions.from_section(s).generate_kwargs())
  rows = []
  for name, params in (("base", base_params), ("base + adapter", adapted)):
    sampler.params = params
    row = {"name": name}
    for world, (captions, held_out) in splits.items():
      verdicts = {"held_out": [], "seen": []}
      start = time.perf_counter()
      for i in range(0, len(captions), args.batch_size):
        batch = captions[i:i + args.batch_size]
        videos = np.asarray(pixels.to_uint8(sharding.to_host(sampler.generate(batch, list(range(i, i + len(batch))),
                                                                              **opts))))
        for caption, video in zip(batch, videos):
          colour, shape, direction = toy_spec.parse_caption(caption)
          split = "held_out" if (colour, shape, direction) in held_out else "seen"
          verdicts[split].append(judge.judge_video(video, colour, direction, shape))
      for split, vs in verdicts.items():
        row[f"{world}_{split}"] = {**_accuracy(vs), "videos": len(vs)}
      row[f"{world}_seconds"] = round(time.perf_counter() - start, 2)
    rows.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)

  tensors = lora_weights.weights.load(adapter)[0]
  adapter_params = sum(int(np.size(t)) for t in tensors.values())
  dit_params = sum(int(np.size(x)) for x in jax.tree.leaves(base_params["dit"]))
  with open(os.path.join(args.lora_workdir, "metrics.jsonl")) as f:
    metrics = [json.loads(line) for line in f]
  ft_config = pretrained.config_io.load(args.lora_workdir)
  results_io.write(args.out, {
      "base": args.base, "base_step": int(step), "lora_workdir": args.lora_workdir,
      "lora": {"rank": ft_config.lora.rank, "alpha": ft_config.lora.alpha, "targets": list(ft_config.lora.targets),
               "steps": ft_config.train.num_steps, "batch_size": ft_config.train.global_batch_size},
      "adapter_params": adapter_params, "dit_params": dit_params,
      "adapter_fraction_of_dit": round(adapter_params / dit_params, 4),
      "adapter_file_mib": round(os.path.getsize(adapter) / 2**20, 3),
      "train_seconds": max((m.get("uptime", 0) for m in metrics), default=None),
      "sample_steps": opts["steps"], "cfg": opts["cfg"], "rows": rows}, markdown(rows))


if __name__ == "__main__":
  main()
