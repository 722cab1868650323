"""Caches VAE latents (and optionally frozen text-encoder embeddings) of a prepared dataset, so the
DiT's train step runs neither the VAE nor the text encoder.

Launch:
  python -m data_prep.cache_latents --data=runs/toy_data --vae=runs/toy_vae/vae.safetensors \
      [--output=runs/toy_data/latents] [--num_frames=9] \
      [--t5=DIR/text_encoder --tokenizer=DIR/tokenizer/spiece.model --text_length=512]
then train with --config.data.dir=OUTPUT --config.latent.vae=THE_SAME_VAE_FILE.

Each clip's first 1 + 4k frames (the most the bucket holds, or --num_frames) are encoded; the
cache keeps the posterior mean and std, so training draws a fresh latent sample every epoch. The
output is a dataset in vdit.data.dataset_files' layout with buckets in latent units, records in
vdit.data.latent_records' format, and metadata.json (written last) naming the VAE by path and
sha256: training refuses a cache made with another VAE. --output defaults to DATA/latents.
"""
import os
import shutil
import time

from absl import flags, logging
import numpy as np

from vdit.core import command
from vdit.data import dataset_files, latent_records, records
from vdit.media import pixels
from vdit.data.errors import DataError


def _frames_to_encode(stored: int, wanted: int, factor: int, bucket: str) -> int:
  frames = min(stored, wanted) if wanted else stored
  frames = 1 + (frames - 1) // factor * factor
  if frames < 1:
    raise DataError(f"Bucket {bucket} has no frames to encode.")
  return frames


def _bucket_clips(bucket: dict):
  """(shard index, decoded clip) of every clip in a pixel bucket, in shard order."""
  from array_record.python import array_record_module
  for i, path in enumerate(bucket["shard_paths"]):
    reader = array_record_module.ArrayRecordReader(path)
    try:
      for k in range(reader.num_records()):
        yield i, records.decode_clip(reader.read([k])[0])
    finally:
      reader.close()


def cache(data_dir: str, vae_path: str, output_dir: str, *, num_frames: int = 0, batch_size: int = 8,
          t5_path: str = "", tokenizer_path: str = "", text_length: int = 0) -> dict:
  """Writes the cache; returns its metadata. Refuses an existing complete cache at output_dir."""
  from vdit.vae import latents
  from vdit.text import conditioner
  from vdit.core import weights

  source = dataset_files.read_metadata(data_dir)
  if source.get("latents"):
    raise DataError(f"{data_dir} already holds latents; give the pixel dataset it was made from.")
  if os.path.exists(os.path.join(output_dir, "metadata.json")):
    raise DataError(f"{output_dir} already holds a complete dataset; delete it or choose another --output.")
  if bool(t5_path) != bool(tokenizer_path) or (t5_path and text_length <= 0):
    raise DataError("Text embeddings need --t5 (encoder folder), --tokenizer (spiece.model) and --text_length > 0.")
  space = latents.load_vae_space(vae_path)
  text = conditioner.T5Text(t5_path, tokenizer_path, text_length) if t5_path else None
  tf, sf = space.temporal_factor, space.spatial_factor

  buckets, total, start = [], 0, time.time()
  for bucket in source["buckets"]:
    name = bucket["name"]
    if bucket["height"] % sf or bucket["width"] % sf:
      raise DataError(f"Bucket {name} is {bucket['height']}x{bucket['width']}: the VAE needs multiples of {sf}; "
                      "re-ingest with such sizes (config.ingest.sizes).")
    frames = _frames_to_encode(bucket["num_frames"], num_frames, tf, name)
    t, h, w, _ = space.model_shape(frames, bucket["height"], bucket["width"])
    latent_name = dataset_files.bucket_name(t, h, w)
    shards = [os.path.join(latent_name, os.path.basename(s)) for s in bucket["shards"]]
    counts = [0] * len(shards)
    with dataset_files.ShardGroup(output_dir) as group:
      for shard in shards:
        group.open(shard)
      pending = []

      def flush():
        video = pixels.to_model_space(np.stack([clip["frames"][:frames] for _, clip in pending]))
        video = np.concatenate([video, np.repeat(video[-1:], batch_size - len(pending), 0)])  # one shape: one compile
        mean, std = (np.asarray(a) for a in space.posterior(video))
        embeddings = masks = None
        if text is not None:
          embeddings, masks = text.encode_batch([clip["caption"] for _, clip in pending], truncate=True)
        for j, (i, clip) in enumerate(pending):
          meta = {k: v for k, v in clip.items() if k not in ("frames", "caption")}
          emb = embeddings[j][:int(masks[j].sum())] if text is not None else None
          group.add(shards[i], latent_records.encode(mean[j], std[j], clip["caption"], text_embedding=emb, **meta))
          counts[i] += 1
        pending.clear()

      for item in _bucket_clips(bucket):
        pending.append(item)
        if len(pending) == batch_size:
          flush()
      if pending:
        flush()
      group.commit()
    total += sum(counts)
    logging.info("Bucket %s (%d frames encoded) -> %s: %d clips.", name, frames, latent_name, sum(counts))
    buckets.append({"name": latent_name, "num_frames": t, "height": h, "width": w, "num_clips": sum(counts),
                    "shards": shards, "clips_per_shard": counts, "pixel_frames": frames,
                    "pixel_height": bucket["height"], "pixel_width": bucket["width"]})

  text_info = None
  if text is not None:
    empty, mask = text.encode_batch([""])
    weights.save(os.path.join(output_dir, conditioner.EMPTY_CAPTION_FILE), {"embedding": empty[0][:int(mask[0].sum())]})
    text_info = {"encoder": os.path.abspath(t5_path), "tokenizer": os.path.abspath(tokenizer_path),
                 "dim": int(text.dim), "max_length": int(text_length)}
  held_out = os.path.join(data_dir, "held_out.json")
  if os.path.exists(held_out):  # the toy world's held-out combinations travel with the data
    shutil.copyfile(held_out, os.path.join(output_dir, "held_out.json"))
  extras = {k: v for k, v in source.items() if k not in ("buckets", "num_clips", "format", "version", "codec",
                                                         "record_format_version")}
  vae = space.vae.config
  metadata = {**extras, "format": dataset_files.FORMAT, "version": dataset_files.VERSION,
              "record_format": latent_records.FORMAT, "num_clips": total, "buckets": buckets,
              "latents": {"vae": os.path.abspath(vae_path), "vae_sha256": latents.file_digest(vae_path),
                          "channels": vae.z_dim, "temporal_factor": tf, "spatial_factor": sf,
                          "latents_mean": list(vae.latents_mean) or [0.0] * vae.z_dim,
                          "latents_std": list(vae.latents_std) or [1.0] * vae.z_dim,
                          "source": os.path.abspath(data_dir), "text": text_info}}
  dataset_files.write_json(os.path.join(output_dir, "metadata.json"), metadata)
  logging.info("Cached %d clips in %.1fs to %s.", total, time.time() - start, output_dir)
  return metadata


def define_flags():
  command.define_path("data", None, "A prepared pixel dataset (data_prep.ingest or data_prep.toy_world).", kind="dir",
                      required=True)
  command.define_path("vae", None, "VAE weights file (vdit.vae.wan_vae format).", required=True)
  flags.DEFINE_string("output", "", "Cache directory (default: DATA/latents).")
  flags.DEFINE_integer("num_frames", 0, "Pixel frames encoded per clip (1 + 4k; default: the most each bucket "
                       "holds).", lower_bound=0)
  flags.DEFINE_integer("batch_size", 8, "Clips encoded per VAE call.", lower_bound=1)
  command.define_path("t5", "", "Optional frozen T5/umT5 encoder (HF safetensors folder) to cache caption "
                      "embeddings.", kind="dir")
  command.define_path("tokenizer", "", "With --t5: its sentencepiece model file.")
  flags.DEFINE_integer("text_length", 0, "With --t5: tokens per caption (the DiT config's text.max_length).",
                       lower_bound=0)


def main(f):
  from vdit.core import logs
  logs.quiet_library_logs()
  output = f.output or os.path.join(f.data, "latents")
  cache(f.data, f.vae, output, num_frames=f.num_frames, batch_size=f.batch_size, t5_path=f.t5,
        tokenizer_path=f.tokenizer, text_length=f.text_length)
  print(f"Wrote the latent cache to {os.path.abspath(output)}")


if __name__ == "__main__":
  command.run(main, define_flags)
