"""What fits where: the real train step compiled ahead of time for Cloud TPU slices from a CPU host.

  pip install "jax[tpu]==$(python -c 'import jax; print(jax.__version__)')"   # libtpu; no TPU needed
  python benchmarks/fit_table.py [--rows=NAME,...] [--out=benchmarks/results/fit_table.json]

Each row runs `python -m vdit.compile_check` in its own process (one topology per process) and
keeps its JSON: per-chip memory (arguments, temporaries, total), model FLOPs, compile seconds, and
whether it fits the chip's HBM (an out-of-memory found by XLA is "would not fit", not a crash).
Prints the JSON and writes it with a Markdown table (the README's "Fit table") beside it.
Clip sizes are Wan 2.1 latents (VAE 4x8x8, 1x2x2 patches): 480p x 81 frames = 21 x 60 x 104
(32,760 tokens), 720p x 81 frames = 21 x 90 x 160 (75,600), a 1-minute 480p clip at 16 fps =
241 x 60 x 104 (375,960).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import results_io  # noqa: E402  (benchmarks/, on sys.path as the script's directory)
CLIPS = {"480p x 81f": (21, 60, 104), "720p x 81f": (21, 90, 160), "480p x 1 min": (241, 60, 104)}
WAN_1P3B, WAN_14B = "configs/wan_1p3b.py", "configs/wan_14b.py"


def _row(name, config, topology, clip, per_chip, mesh, remat="full", attention="splash", context_parallel="none",
         lora_rank=0):
  chips = 1
  for size in mesh.values():
    chips *= size
  return dict(name=name, config=config, topology=topology, clip=clip, per_chip=per_chip, mesh=mesh, remat=remat,
              attention=attention, context_parallel=context_parallel, global_batch=max(1, round(per_chip * chips)),
              lora_rank=lora_rank)


ROWS = [
    _row("1p3b_v5p8_b1", WAN_1P3B, "tpu:v5p:2x2x1", "480p x 81f", 1, {"fsdp": 4}),
    _row("1p3b_v5p8_b1_dots_attention", WAN_1P3B, "tpu:v5p:2x2x1", "480p x 81f", 1, {"fsdp": 4},
         remat="dots_attention"),
    _row("1p3b_v5p8_b1_xla", WAN_1P3B, "tpu:v5p:2x2x1", "480p x 81f", 1, {"fsdp": 4}, attention="xla"),
    _row("1p3b_v5p8_b8", WAN_1P3B, "tpu:v5p:2x2x1", "480p x 81f", 8, {"fsdp": 4}),
    _row("1p3b_v5p8_b12", WAN_1P3B, "tpu:v5p:2x2x1", "480p x 81f", 12, {"fsdp": 4}),
    _row("1p3b_v5e4_b1", WAN_1P3B, "tpu:v5e:2x2", "480p x 81f", 1, {"fsdp": 4}),
    # Each block's input (what remat=full stores per block) kept in host memory instead: full training
    # on 4 v5e chips.
    _row("1p3b_v5e4_b1_offload_carry", WAN_1P3B, "tpu:v5e:2x2", "480p x 81f", 1, {"fsdp": 4},
         remat="offload_carry"),
    # LoRA fine-tuning (rank 32 on self-/cross-attention and FFN; the base frozen, FSDP-sharded): what
    # full training cannot fit on 4 v5e chips.
    _row("1p3b_v5e4_b1_lora32", WAN_1P3B, "tpu:v5e:2x2", "480p x 81f", 1, {"fsdp": 4}, lora_rank=32),
    _row("1p3b_v6e4_b1", WAN_1P3B, "tpu:v6e:2x2", "480p x 81f", 1, {"fsdp": 4}),
    _row("1p3b_v6e4_b2", WAN_1P3B, "tpu:v6e:2x2", "480p x 81f", 2, {"fsdp": 4}),
    _row("14b_v5p64_b1", WAN_14B, "tpu:v5p:2x4x4", "720p x 81f", 1, {"fsdp": 32}),
    _row("14b_v6e64_b1", WAN_14B, "tpu:v6e:8x8", "720p x 81f", 1, {"fsdp": 64}),
    # A clip split over 2 or 4 chips (Ulysses: 40 heads divide), when one clip per chip does not fit.
    _row("14b_v5p64_ulysses2", WAN_14B, "tpu:v5p:2x4x4", "720p x 81f", 0.5, {"fsdp": 16, "context": 2},
         context_parallel="ulysses"),
    _row("14b_v5p64_ulysses4", WAN_14B, "tpu:v5p:2x4x4", "720p x 81f", 0.25, {"fsdp": 8, "context": 4},
         context_parallel="ulysses"),
    # One clip split over the context axis (ring: any head count; Wan-1.3B's 12 heads do not split 8 ways).
    _row("1p3b_1min_v5p8_ring4", WAN_1P3B, "tpu:v5p:2x2x1", "480p x 1 min", 0.25, {"context": 4},
         context_parallel="ring"),
]


def run_row(row: dict, timeout: int) -> dict:
  frames, height, width = CLIPS[row["clip"]]
  mesh_flags = [f"--config.mesh.{axis}={row['mesh'].get(axis, 1)}" for axis in ("data", "fsdp", "context", "tensor")]
  command = [sys.executable, "-m", "vdit.compile_check", f"--config={row['config']}:frames={frames}",
             f"--topology={row['topology']}", f"--num_frames={frames}", f"--height={height}", f"--width={width}",
             f"--config.train.global_batch_size={row['global_batch']}", f"--config.model.remat={row['remat']}",
             f"--config.model.attention={row['attention']}",
             f"--config.model.context_parallel={row['context_parallel']}", f"--config.lora.rank={row['lora_rank']}",
             *mesh_flags]
  start = time.perf_counter()
  try:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {**row, "error": f"compile_check ran past {timeout} s"}
  seconds = round(time.perf_counter() - start, 1)
  if done.returncode not in (0, 1) or not done.stdout.strip().startswith("{"):
    return {**row, "error": (done.stderr.strip().splitlines() or ["no output"])[-1][:400], "wall_seconds": seconds}
  return {**row, "wall_seconds": seconds, "report": json.loads(done.stdout)}


def markdown(rows: list) -> str:
  lines = ["| model | clip | slice | mesh | batch/chip | attention | remat | arguments GiB | temp GiB | "
           "total GiB / HBM | fits | model TFLOPs/step | compile s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    model = ("Wan-14B" if row["config"] == WAN_14B else "Wan-1.3B") + (
        f" LoRA r{row['lora_rank']}" if row.get("lora_rank") else "")
    mesh = " ".join(f"{axis}={size}" for axis, size in row["mesh"].items())
    attention = row["attention"] + ("" if row["context_parallel"] == "none" else f" + {row['context_parallel']}")
    head = f"| {model} | {row['clip']} | {row['topology'][4:]} | {mesh} | {row['per_chip']:g} | {attention} | {row['remat']} |"
    report = row.get("report")
    if report is None:
      lines.append(f"{head} | | | | error: {row['error']} | | |")
      continue
    memory = report["memory_per_device"]
    gib = lambda key: f"{memory[key] / 2**30:.1f}" if memory else "-"
    total = f"{memory['total_bytes'] / 2**30:.1f}" if memory else "> HBM (XLA)"
    fits = {True: "yes", False: "**no**", None: "?"}[report["fits"]]
    lines.append(f"{head} {gib('argument_bytes')} | {gib('temp_bytes')} | {total} / {report['memory_limit_gib']:g} | "
                 f"{fits} | {report['model_flops_per_step'] / 1e12:.0f} | {report['compile_seconds']:.0f} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rows", default="", help="Comma-separated row names (default: all): " +
                      ", ".join(r["name"] for r in ROWS))
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "fit_table.json"))
  parser.add_argument("--timeout", type=int, default=1800, help="Seconds per row.")
  args = parser.parse_args()
  wanted = set(filter(None, args.rows.split(",")))
  unknown = wanted - {r["name"] for r in ROWS}
  if unknown:
    parser.exit(2, f"error: --rows: unknown {sorted(unknown)}; choose from {[r['name'] for r in ROWS]}.\n")
  rows = []
  for row in ROWS:
    if not wanted or row["name"] in wanted:
      rows.append(run_row(row, args.timeout))
      print(f"{row['name']}: {rows[-1].get('error') or rows[-1]['report']['fits']}", file=sys.stderr, flush=True)
  results_io.write(args.out, {"rows": rows}, markdown(rows))


if __name__ == "__main__":
  main()
