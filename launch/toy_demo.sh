#!/usr/bin/env bash
# The toy demo, end to end on CPU: generate data, train, sample seen and held-out prompts, judge.
#   bash launch/toy_demo.sh            (after `pip install -e .` into .venv; the README does both)
# Rerunning resumes training from runs/toy and regenerates the samples.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-runs/toy_data}
WORKDIR=${WORKDIR:-runs/toy}
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1

echo "== 1/4 toy world -> $DATA"
# Reuse a complete dataset of the current format; otherwise (re)generate it.
"$PY" -c "import sys; from vdit.data import dataset_files; dataset_files.read_metadata(sys.argv[1])" \
  "$DATA" 2>/dev/null || "$PY" -m data_prep.toy_world --output="$DATA" --num_clips=8192

echo "== 2/4 train -> $WORKDIR (resumes if interrupted)"
"$PY" -m vdit.main --config=configs/toy.py --workdir="$WORKDIR" --config.data.dir="$DATA" "$@"

echo "== 3/4 sample held-out and seen prompts"
"$PY" -m data_prep.toy_prompts --data="$DATA" --out="$WORKDIR/prompts.txt"
"$PY" -m vdit.sample --workdir="$WORKDIR" --prompts="$WORKDIR/prompts.txt" --out="$WORKDIR/samples"

echo "== 4/4 judge colour and direction"
"$PY" -m vdit.eval.toy --index="$WORKDIR/samples/index.jsonl" --held_out="$DATA/held_out.json" \
  --out="$WORKDIR/samples/scores.json" > /dev/null
"$PY" - "$WORKDIR/samples/scores.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
for split in ("seen", "held_out"):
  s = r[split]
  print(f"{split:>9}: {s['num_videos']:3d} videos  colour {s['colour_accuracy']:.0%}  "
        f"direction {s['direction_accuracy']:.0%}  both {s['both_accuracy']:.0%}")
PYEOF
echo "Videos, contact_sheet.png and index.jsonl: $WORKDIR/samples  (scores: $WORKDIR/samples/scores.json)"
