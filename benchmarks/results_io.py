"""Writes a benchmark's result: JSON (with the machine it ran on) beside a Markdown table, and prints the JSON."""
import json
import os
import platform
import time


def write(path: str, result: dict, table: str) -> None:
  import jax
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "jax": jax.__version__,
            "date": time.strftime("%Y-%m-%d"), **result}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.splitext(path)[0] + ".md", "w") as f:
    f.write(table + "\n")
  print(json.dumps(result, indent=2))
