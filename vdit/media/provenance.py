"""Provenance tags that every video and image vdit writes carries in its container: which
generator, version, config (hash of the workdir's config.json), checkpoint step, seed, prompt,
caption and mode made it. `video_reader.read_tags` reads them back.
"""
import hashlib
import importlib.metadata


from vdit.core.workdir_files import config_path


def version() -> str:
  try:
    return importlib.metadata.version("vdit")
  except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
    return "unknown"


def config_hash(workdir: str) -> str:
  """First 16 hex digits of the SHA-256 of the workdir's config.json."""
  with open(config_path(workdir), "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:16]


def tags(*, prompt: str, caption: str, seed: int, mode: str, checkpoint_step: int, workdir: str,
         watermarked: bool = False) -> dict:
  return {"generator": "vdit", "vdit_version": version(), "config_hash": config_hash(workdir),
          "checkpoint_step": str(checkpoint_step), "seed": str(seed), "prompt": prompt,
          "caption": caption, "mode": mode, "watermark": "vdit-grid16" if watermarked else "none"}
