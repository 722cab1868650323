"""The safety stages measured: prompt-check recall and false-positive rate of the shipped policy on
the hand-written prompts in tests/data/safety_prompts.jsonl, the toy "no red objects" frame check on
rendered toy clips, and the seconds each stage and a C2PA signature add per video; with --workdir (a
trained toy model), the same frame check on videos it generates, image-to-video from red first
frames, and the README's sampling signed and verified (benchmarks/safety_generated.py).

  python benchmarks/safety.py [--workdir=runs/toy] [--out=benchmarks/results/safety_cpu.json]

Recall counts a violating prompt as caught when it is blocked or flagged (under any category; the
category agreement is reported too); the false-positive rate is the share of benign prompts
(near-misses and ordinary ones) blocked or flagged. Times are medians over repeats on this machine.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import results_io  # noqa: E402  (benchmarks/, on sys.path as the script's directory)


def _prompt_check(prompts):
  from vdit.safety import policy, prompt_check
  checker = prompt_check.PromptChecker(policy.load(policy.default_path()))
  rows, start = [], time.perf_counter()
  for p in prompts:
    verdict = checker.check(p["prompt"])
    rows.append((p, verdict))
  seconds = (time.perf_counter() - start) / len(prompts)
  result = {"prompts": len(prompts), "seconds_per_prompt": seconds}
  for kind in ("violating", "obfuscated", "near_miss", "ordinary"):
    of_kind = [(p, v) for p, v in rows if p["kind"] == kind]
    caught = [v.decision != "allowed" for _, v in of_kind]
    result[kind] = {"prompts": len(of_kind), "caught": sum(caught)}
  bad = [(p, v) for p, v in rows if p["label"] != "none"]
  benign = [(p, v) for p, v in rows if p["label"] == "none"]
  result["recall"] = sum(v.decision != "allowed" for _, v in bad) / len(bad)
  result["category_agreement"] = sum(v.category == p["label"] for p, v in bad) / len(bad)
  result["false_positive_rate"] = sum(v.decision != "allowed" for _, v in benign) / len(benign)
  result["missed"] = [p["prompt"] for p, v in bad if v.decision == "allowed"]
  result["false_positives"] = [p["prompt"] for p, v in benign if v.decision != "allowed"]
  return result


def _classifier(prompts):
  """The shipped offline classifier (configs/safety/prompt_classifier.safetensors, trained on
  configs/safety/prompt_train.jsonl) on the same held-out prompts: alone, and with the term lists
  (either one hits). 0.5 is the threshold fixed before measuring; the others are shown, not chosen."""
  import numpy as np
  from vdit.safety import prompt_classifier
  model = prompt_classifier.load(os.path.join(ROOT, "configs", "safety", "prompt_classifier.safetensors"))
  start = time.perf_counter()
  scores = model.scores([p["prompt"] for p in prompts])
  seconds = (time.perf_counter() - start) / len(prompts)
  bad = np.array([p["label"] != "none" for p in prompts])
  from vdit.safety import policy, prompt_check
  checker = prompt_check.PromptChecker(policy.load(policy.default_path()))
  terms = np.array([checker.check(p["prompt"]).decision != "allowed" for p in prompts])
  result = {"seconds_per_prompt": seconds, "thresholds": {}}
  for threshold in (0.3, 0.5, 0.7, 0.9):
    hit = scores >= threshold
    result["thresholds"][str(threshold)] = {
        "recall": float(hit[bad].mean()), "false_positive_rate": float(hit[~bad].mean()),
        "with_terms_recall": float((hit | terms)[bad].mean()),
        "with_terms_false_positive_rate": float((hit | terms)[~bad].mean())}
  result["scores_of_prompts_terms_missed"] = {p["prompt"]: float(s) for p, s, t in zip(prompts, scores, terms)
                                               if p["label"] != "none" and not t}
  return result


def _clips(rng, n, size=32, frames=8):
  from vdit.toy import spec, world
  clips = []
  for i in range(n):
    colour, shape, direction = list(spec.COLOURS)[i % len(spec.COLOURS)], spec.SHAPES[i % 3], list(spec.DIRECTIONS)[i % 4]
    start, speed, radius = world.sample_motion(rng, direction, num_frames=frames, height=size, width=size)
    clips.append((colour, world.render_clip(colour, shape, direction, start=start, speed=speed, radius=radius,
                                            num_frames=frames, height=size, width=size)))
  return clips


def _frame_check(clips):
  from vdit.safety import policy
  from vdit.safety.frame_check import FrameChecker
  checker = FrameChecker(policy.load(os.path.join(ROOT, "configs", "safety", "toy_no_red.json")))
  times, hits = [], []
  for colour, clip in clips:
    start = time.perf_counter()
    verdict, _ = checker.check(clip)
    times.append(time.perf_counter() - start)
    hits.append((colour == "red", verdict.blocked))
  true_pos = sum(r and b for r, b in hits)
  return {"clips": len(clips), "red_clips": sum(r for r, _ in hits),
          "recall": true_pos / max(1, sum(r for r, _ in hits)),
          "precision": true_pos / max(1, sum(b for _, b in hits)), "seconds_per_video": statistics.median(times)}


def _c2pa(clips, repeats):
  from vdit.media.c2pa_dev_chain import write_chain
  from vdit.media import c2pa_manifest, video_io
  tags = {"generator": "vdit", "vdit_version": "bench", "config_hash": "0" * 16, "seed": "0", "mode": "text",
          "prompt": "a red circle moving left", "caption": "a red circle moving left"}
  with tempfile.TemporaryDirectory() as tmp:
    credentials = c2pa_manifest.load_credentials(*write_chain(tmp))
    definition = c2pa_manifest.manifest(tags, include_prompt=True)
    timings = {}
    for signed in (False, True):
      runs = []
      for _ in range(repeats):
        for i, (_, clip) in enumerate(clips):
          seal = (lambda s: c2pa_manifest.sealer(credentials, definition, c2pa_manifest.MIME[s])) if signed else \
              (lambda s: None)
          start = time.perf_counter()
          video_io.write_mp4(f"{tmp}/{i}.mp4", clip, fps=8, scale=4, metadata=tags, seal=seal(".mp4"))
          video_io.write_gif(f"{tmp}/{i}.gif", clip, fps=8, scale=4, metadata=tags, seal=seal(".gif"))
          runs.append(time.perf_counter() - start)
      timings["signed" if signed else "unsigned"] = statistics.median(runs)
    valid = all(c2pa_manifest.read(f"{tmp}/{i}.{ext}")["state"] == "Valid" for i in range(len(clips))
                for ext in ("mp4", "gif"))
  return {"write_mp4_and_gif_seconds": timings, "overhead_seconds_per_video": timings["signed"] - timings["unsigned"],
          "all_valid": valid}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "safety_cpu.json"))
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--workdir", default=None, help="A trained toy workdir: also measure on generated videos.")
  args = parser.parse_args()
  import numpy as np
  with open(os.path.join(ROOT, "tests", "data", "safety_prompts.jsonl"), encoding="utf-8") as f:
    prompts = [json.loads(line) for line in f if line.strip()]
  clips = _clips(np.random.default_rng(0), 64)
  prompt, frames, c2pa = _prompt_check(prompts), _frame_check(clips), _c2pa(clips[:16], args.repeats)
  classifier = _classifier(prompts)
  at = classifier["thresholds"]["0.5"]
  total = prompt["seconds_per_prompt"] + frames["seconds_per_video"] + c2pa["overhead_seconds_per_video"]
  result = {"prompt_check": prompt, "prompt_classifier": classifier, "toy_frame_check": frames, "c2pa": c2pa,
            "safety_seconds_per_video": total}
  table = "\n".join([
      "| measure | value |", "|---|---|",
      f"| prompt recall ({prompt['prompts']} prompts) | {100 * prompt['recall']:.1f}% |",
      f"| prompt false-positive rate | {100 * prompt['false_positive_rate']:.1f}% |",
      f"| offline prompt classifier at 0.5 (held out): recall / false-positive rate | "
      f"{100 * at['recall']:.1f}% / {100 * at['false_positive_rate']:.1f}% |",
      f"| terms or classifier at 0.5: recall / false-positive rate | "
      f"{100 * at['with_terms_recall']:.1f}% / {100 * at['with_terms_false_positive_rate']:.1f}% |",
      f"| toy no-red frame check recall / precision ({frames['clips']} rendered clips) | "
      f"{100 * frames['recall']:.0f}% / {100 * frames['precision']:.0f}% |",
      f"| prompt check, s / prompt | {prompt['seconds_per_prompt']:.5f} |",
      f"| toy frame check, s / video | {frames['seconds_per_video']:.4f} |",
      f"| C2PA signing (mp4 + gif), s / video | {c2pa['overhead_seconds_per_video']:.4f} |",
      f"| all safety stages, s / video | {total:.4f} |"])
  if args.workdir:
    import safety_generated  # noqa: E402  (benchmarks/, as results_io)
    generated = result["generated"] = safety_generated.measure(args.workdir)
    table += "\n" + _generated_rows(generated)
  results_io.write(args.out, result, table)


def _generated_rows(g) -> str:
  f, i2v, c2pa = g["frame_check"], g["image_to_video"], g["c2pa"]
  rate = lambda r: f"recall {100 * r['recall']:.1f}% ({r['true_positives']}/{r['positives']}), precision " \
                   f"{100 * r['precision']:.1f}% ({r['true_positives']}/{r['blocked']})"
  return "\n".join([
      f"| toy no-red frame check on {f['videos']} generated videos, truth = prompt colour | "
      f"{rate(f['vs_prompt_colour'])} |",
      f"| same, truth = toy judge's colour reading | {rate(f['vs_judge_reading'])} |",
      f"| image-to-video, red first frame + non-red prompt: inputs blocked | {i2v['red_inputs_blocked']}/"
      f"{i2v['red_first_frames']} (other colours blocked: {i2v['other_inputs_blocked']}/{i2v['other_first_frames']}) |",
      f"| same, input check skipped: outputs blocked by the frame check | "
      f"{i2v['red_outputs_blocked_without_input_check']}/{i2v['red_first_frames']} |",
      f"| `vdit.sample --image=red.png` (neutral prompt) | exit {i2v['command']['exit_status']}, files "
      f"{', '.join(i2v['command']['files_written'])} |",
      f"| C2PA: README sampling files valid (SDK reader) | {c2pa['valid']}/{c2pa['files']} |",
      f"| C2PA signing of a generated mp4 + GIF, s / video | {c2pa['signing']['overhead_seconds_per_video']:.4f} |",
      f"| toy frame check on a generated video, s / video | {f['check_seconds_per_video']:.4f} |"])


if __name__ == "__main__":
  main()
