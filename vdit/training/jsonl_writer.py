"""A metric writer that appends scalars to WORKDIR/metrics.jsonl (one object per write).

Plain JSON lines are what scripts and tests read; TensorBoard and the log get the same values
(vdit/training/writers.py). A run resumed from checkpoint S first calls `keep_through(path, S)`:
the steps after S run again, so their old records go.
"""
import json
import os

class JsonlWriter:

  def __init__(self, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._path = path
    open(path, "a", encoding="utf-8").close()

  def write_scalars(self, step, scalars):
    record = {"step": int(step)}
    record.update({k: float(v) for k, v in scalars.items()})
    # Opened per record (a few per log step): each line is on disk when written, so it survives a
    # kill, and keep_through may replace the file at any time.
    with open(self._path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")

  def write_images(self, step, images):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def _record(line: str) -> dict | None:
  """The record of one line, or None for a line a killed writer left unfinished."""
  if not line.endswith("\n"):
    return None
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    return None
  return record if isinstance(record, dict) and "step" in record else None


def read(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [r for r in map(_record, f) if r is not None]


def keep_through(path: str, step: int) -> None:
  """Rewrites `path` with only the records of steps <= `step` (an unfinished last line goes too),
  atomically: a temporary file renamed over it. Nothing to do when every record is kept."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  kept = [line for line in lines if (r := _record(line)) is not None and r["step"] <= step]
  if len(kept) == len(lines):
    return
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
