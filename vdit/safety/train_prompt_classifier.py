"""Trains the offline prompt classifier (vdit.safety.prompt_classifier) on labelled prompts.

  python -m vdit.safety.train_prompt_classifier --data=configs/safety/prompt_train.jsonl \
      --out=configs/safety/prompt_classifier.safetensors

--data: JSON lines {"prompt": ..., "label": "none" | a category}; every label but "none" counts as
violating. Full-batch Adam on the class-balanced logistic loss with L2, in numpy (a few seconds on
a CPU). Prints the training-set recall and false-positive rate at 0.5; measure on prompts it never
saw (benchmarks/safety.py does, on tests/data/safety_prompts.jsonl).
"""
import json
import os

from absl import flags
import numpy as np

from vdit.core import command
from vdit.core.errors import UserError
from vdit.safety import prompt_classifier


def read_prompts(path: str) -> tuple[list[str], np.ndarray]:
  """(prompts, 1 for violating / 0 for "none")."""
  texts, labels = [], []
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.readlines()
  except UnicodeDecodeError as e:
    raise UserError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8 JSON lines.") from None
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f"{path} line {number}: not JSON ({e.msg}); write one {{\"prompt\", \"label\"}} object per "
                      "line.") from None
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("label"), str):
      raise UserError(f"{path} line {number}: needs a string \"prompt\" and a string \"label\" (\"none\" for "
                      "benign).")
    texts.append(row["prompt"])
    labels.append(row["label"] != "none")
  if len(set(labels)) < 2:
    raise UserError(f"{path} needs both benign (\"label\": \"none\") and violating prompts; it has "
                    f"{len(labels)} prompts of one kind.")
  return texts, np.asarray(labels, np.float32)


def train(texts, labels, *, steps=400, lr=0.1, l2=1e-4) -> prompt_classifier.PromptClassifier:
  x = prompt_classifier.features(texts)
  # Class-balanced: each class weighs half, whatever its share of the data.
  weight = np.where(labels == 1, 0.5 / labels.mean(), 0.5 / (1 - labels.mean())) / len(labels)
  params = [np.zeros(x.shape[1], np.float32), np.zeros((), np.float32)]
  moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
  for step in range(1, steps + 1):
    error = (prompt_classifier.sigmoid(x @ params[0] + params[1]) - labels) * weight
    grads = [x.T @ error + l2 * params[0], error.sum()]
    for p, g, m in zip(params, grads, moments):  # Adam
      m[0] = 0.9 * m[0] + 0.1 * g
      m[1] = 0.999 * m[1] + 0.001 * g * g
      p -= lr * (m[0] / (1 - 0.9**step)) / (np.sqrt(m[1] / (1 - 0.999**step)) + 1e-8)
  return prompt_classifier.PromptClassifier(params[0], float(params[1]))


def define_flags():
  command.define_path("data", None, "Labelled prompts, JSON lines {\"prompt\", \"label\"}.", required=True)
  flags.DEFINE_string("out", None, "Output weights file (.safetensors).", required=True)
  flags.DEFINE_integer("steps", 400, "Full-batch Adam steps.", lower_bound=1)
  flags.DEFINE_float("l2", 1e-4, "L2 penalty on the weights.", lower_bound=0.0)


def main(f):
  if not f.out.endswith(".safetensors") or os.path.isdir(f.out):
    raise UserError(f"--out={f.out} must be a .safetensors file path.")
  texts, labels = read_prompts(f.data)
  model = train(texts, labels, steps=f.steps, l2=f.l2)
  caught = model.scores(texts) >= 0.5
  report = {"prompts": len(texts), "violating": int(labels.sum()), "train_recall": float(caught[labels == 1].mean()),
            "train_false_positive_rate": float(caught[labels == 0].mean())}
  model.save(f.out, {"data": os.path.basename(f.data), "prompts": len(texts), "steps": f.steps, "l2": f.l2})
  print(json.dumps(report, indent=2))
  print(f"Wrote {f.out}")


if __name__ == "__main__":
  command.run(main, define_flags)
