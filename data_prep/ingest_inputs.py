"""Finding ingest inputs and their captions: a folder with sidecar .txt captions, or a
JSONL/CSV manifest of {file, caption} rows.

Every input becomes one `Input`, so the report can account for all of them; problems found
before decoding (missing file, no caption, unsupported extension) are recorded on it.
"""
import csv
import dataclasses
import json
import os

from vdit.media.video_reader import MEDIA_EXTENSIONS
from vdit.core.errors import UserError

MANIFEST_EXTENSIONS = (".jsonl", ".csv")


class InputError(UserError):
  """The --input path or manifest cannot be used at all."""


@dataclasses.dataclass
class Input:
  path: str  # as the user wrote it: relative to the input folder, or the manifest's "file"
  full_path: str
  caption: str | None
  problem: str = ""  # a drop reason found before decoding, or ""
  detail: str = ""


def _read_sidecar(media_path: str) -> tuple[str | None, str]:
  """(caption or None, problem) from MEDIA.txt next to the file."""
  sidecar = os.path.splitext(media_path)[0] + ".txt"
  if not os.path.isfile(sidecar):
    return None, ""
  try:
    with open(sidecar, encoding="utf-8-sig") as f:
      return f.read().strip(), ""
  except UnicodeDecodeError:
    return None, "caption_not_utf8"


def _from_folder(folder: str, exclude: str) -> list[Input]:
  files = []
  for root, dirs, names in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if os.path.abspath(os.path.join(root, d)) != exclude)
    files.extend(os.path.join(root, n) for n in sorted(names))
  stems = {os.path.splitext(f)[0] for f in files if f.lower().endswith(MEDIA_EXTENSIONS)}
  inputs = []
  for full in files:
    stem, ext = os.path.splitext(full)
    if ext.lower() == ".txt" and stem in stems:
      continue  # a caption sidecar, not an input
    rel = os.path.relpath(full, folder)
    if ext.lower() == ".txt":
      inputs.append(Input(rel, full, None, "orphan_caption",
                          f"a caption file with no video or image named "
                          f"{os.path.basename(stem)}.* next to it"))
      continue
    if not full.lower().endswith(MEDIA_EXTENSIONS):
      inputs.append(Input(rel, full, None, "unsupported_extension",
                          f"{ext or 'no extension'} is not one of {' '.join(MEDIA_EXTENSIONS)}"))
      continue
    caption, problem = _read_sidecar(full)
    inputs.append(Input(rel, full, caption, problem))
  return inputs


def _manifest_rows(manifest: str):
  """(row label, row dict or None) for each data row of a JSONL or CSV manifest."""
  try:
    with open(manifest, encoding="utf-8-sig", newline="") as f:
      if manifest.lower().endswith(".csv"):
        reader = csv.DictReader(f)
        if not reader.fieldnames or "file" not in reader.fieldnames:
          raise InputError(f"{manifest}: the CSV header must name a 'file' column (and "
                           f"'caption'); found {reader.fieldnames}.")
        for number, row in enumerate(reader, start=2):
          yield f"line {number}", row
        return
      for number, line in enumerate(f, start=1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except ValueError:
          row = None
        yield f"line {number}", row if isinstance(row, dict) else None
  except UnicodeDecodeError as e:
    raise InputError(f"{manifest} is not UTF-8 text ({e}); save it as UTF-8.") from e


def _from_manifest(manifest: str) -> list[Input]:
  base = os.path.dirname(os.path.abspath(manifest))
  inputs = []
  for label, row in _manifest_rows(manifest):
    file = row.get("file") if row else None
    if not isinstance(file, str) or not file.strip():
      inputs.append(Input(f"{os.path.basename(manifest)}:{label}", "", None, "bad_manifest_row",
                          "the row is not an object with a non-empty 'file' field"))
      continue
    caption = row.get("caption")
    full = file if os.path.isabs(file) else os.path.join(base, file)
    item = Input(file, full, caption.strip() if isinstance(caption, str) else None)
    if not os.path.isfile(full):
      item.problem, item.detail = "file_not_found", f"{full} does not exist"
    elif not full.lower().endswith(MEDIA_EXTENSIONS):
      item.problem = "unsupported_extension"
    inputs.append(item)
  return inputs


def discover(input_path: str, *, allow_missing_captions: bool, exclude: str = "") -> list[Input]:
  """All inputs under a folder or listed in a manifest, in a stable order.

  `exclude` is a folder to skip (the ingest output, when it lies inside the input folder).

  Raises:
    InputError: the path does not exist, or is neither a folder nor a .jsonl/.csv manifest.
  """
  if os.path.isdir(input_path):
    inputs = _from_folder(input_path, os.path.abspath(exclude) if exclude else "")
  elif os.path.isfile(input_path) and input_path.lower().endswith(MANIFEST_EXTENSIONS):
    inputs = _from_manifest(input_path)
  elif os.path.exists(input_path):
    raise InputError(f"--input={input_path!r} is a file but not a manifest; pass a folder of "
                     f"videos and images, or a {' / '.join(MANIFEST_EXTENSIONS)} manifest with "
                     "'file' and 'caption' fields.")
  else:
    raise InputError(f"--input={input_path!r} does not exist.")
  for item in inputs:
    if not item.problem and not item.caption:
      if allow_missing_captions:
        item.caption = ""
      else:
        item.problem = "missing_caption"
        item.detail = ("no caption in the manifest row or sidecar .txt (set "
                       "--config.ingest.allow_missing_captions=True to keep it uncaptioned)")
  return inputs
