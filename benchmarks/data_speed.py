"""Data throughput on this machine, as JSON: ingest clips/s per process, per-frame codec size and
decode cost, and loader batches/s against what a train step consumes.

  python benchmarks/data_speed.py [--videos=24] [--seconds=6]

Ingest runs on generated H.264 sources (moving shapes on textured, noisy backgrounds, so frames
compress like camera footage rather than flat toy frames). The loader is compared with the train
step of the toy config (8x32x32 clips, batch 16) and a mid-size config (8x64x64, batch 4),
measured here with benchmarks/train_speed.py on this machine's devices.
"""
import json
import os
import sys
import tempfile
import time

from absl import app, flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_speed  # noqa: E402
from configs import videos  # noqa: E402
from data_prep import ingest, sample_media  # noqa: E402
from vdit.media import video_io  # noqa: E402
from vdit.data import bucket_plan, dataset_files, pipeline, records  # noqa: E402
from vdit.text.tokenizer import Tokenizer  # noqa: E402

_VIDEOS = flags.DEFINE_integer("videos", 24, "Source videos to ingest.")
_SECONDS = flags.DEFINE_float("seconds", 6.0, "Length of each source video.")


def _camera_like(rng, num_frames, height, width):
  """A toy scene over a textured background with sensor-like noise."""
  frames, _ = sample_media.scene(rng, num_frames=num_frames, height=height, width=width)
  yy, xx = np.mgrid[:height, :width]
  texture = (24 * np.sin(xx / 7.0) * np.cos(yy / 11.0))[None, :, :, None]
  noise = rng.normal(0, 4, frames.shape)
  return np.clip(frames + texture + noise, 0, 255).astype(np.uint8)


def _write_sources(folder, count, seconds, fps=24, size=(360, 640)):
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  for i in range(count):
    path = os.path.join(folder, f"video_{i:03d}.mp4")
    video_io.write_video(path, _camera_like(rng, int(seconds * fps), *size), fps)
    with open(path[:-4] + ".txt", "w") as f:
      f.write("a red circle moving left")


def _ingest_speed(sources, out_root):
  config = videos.get_config()
  with config.unlocked():
    config.ingest.sizes = ("256x448", "256x256")
    config.ingest.frame_counts = (17, 33)
    config.ingest.fps = 12.0
    config.ingest.files_per_shard = 2
  results = {}
  for workers in (1, 2):
    out = os.path.join(out_root, f"ingest_{workers}")
    t0 = time.perf_counter()
    report = ingest.ingest(sources, out, config.ingest, workers=workers)
    seconds = time.perf_counter() - t0
    results[f"workers_{workers}"] = {
        "clips": report["clips_written"], "seconds": round(seconds, 2),
        "clips_per_s": round(report["clips_written"] / seconds, 2),
        "clips_per_s_per_process": round(report["clips_written"] / seconds / workers, 2),
        "source_seconds_per_s": round(len(os.listdir(sources)) / 2 * _SECONDS.value / seconds, 1)}
  return results, os.path.join(out_root, "ingest_1")


def _codec_sizes(data_dir):
  """Bytes per frame and decode ms per clip of each record codec, on real ingested clips."""
  bucket = dataset_files.read_metadata(data_dir)["buckets"][0]
  from array_record.python import array_record_module
  reader = array_record_module.ArrayRecordReader(bucket["shard_paths"][0])
  clips = [records.decode_clip(r) for r in reader.read(list(range(min(8, reader.num_records()))))]
  reader.close()
  out = {"bucket": bucket["name"]}
  for codec in records.CODECS:
    encoded = [records.encode_clip(c["frames"], c["caption"], codec=codec, quality=90) for c in clips]
    t0 = time.perf_counter()
    for blob in encoded:
      records.decode_clip(blob)
    decode_ms = (time.perf_counter() - t0) / len(encoded) * 1000
    frames = sum(c["frames"].shape[0] for c in clips)
    out[codec] = {"bytes_per_frame": int(sum(map(len, encoded)) / frames),
                  "decode_ms_per_clip": round(decode_ms, 2)}
  raw = out["raw"]["bytes_per_frame"]
  for codec in records.CODECS:
    out[codec]["ratio_to_raw"] = round(out[codec]["bytes_per_frame"] / raw, 4)
  return out


def _loader_speed(data_dir, batch, frames, size, codec, workers, batches=40):
  """Batches/s of the Grain loader for one bucket of `size` clips stored with `codec`."""
  rng = np.random.default_rng(1)
  clips = [records.encode_clip(_camera_like(rng, frames, size, size), "a red circle moving left",
                               codec=codec) for _ in range(64)]
  name = dataset_files.bucket_name(frames, size, size)
  dataset_files.write_shard(os.path.join(data_dir, name, "part-00000.array_record"), clips)
  dataset_files.write_json(os.path.join(data_dir, "metadata.json"), {
      "format": "vdit-clips", "version": 2, "num_clips": 64, "buckets": [{
          "name": name, "num_frames": frames, "height": size, "width": size, "num_clips": 64,
          "shards": [f"{name}/part-00000.array_record"]}]})
  plan = bucket_plan.plan(dataset_files.read_metadata(data_dir)["buckets"], patch_size=(1, 1, 1),
                          global_batch_size=batch, tokens_per_batch=0, batch_multiple=1,
                          max_frames=0, image_ratio=-1)
  it = pipeline.make_train_iterator(plan, tokenizer=Tokenizer(32), seed=0, worker_count=workers)
  next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  rate = batches / (time.perf_counter() - t0)
  it.close()
  return round(rate, 1)


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    sources = os.path.join(tmp, "sources")
    _write_sources(sources, _VIDEOS.value, _SECONDS.value)
    ingest_results, ingested = _ingest_speed(sources, tmp)
    codecs = _codec_sizes(ingested)
    loader = {}
    step_rates = {"toy": train_speed.bench("toy", train_speed.toy_config(), 20)["train_steps_per_s"],
                  "mid": train_speed.bench("mid", train_speed.mid_config(), 2)["train_steps_per_s"]}
    for name, batch, frames, size in (("toy", 16, 8, 32), ("mid", 4, 8, 64)):
      step_rate = step_rates[name]
      for codec in ("raw", "jpeg"):
        rate = _loader_speed(os.path.join(tmp, f"loader_{name}_{codec}"), batch, frames, size,
                             codec, workers=0)
        loader[f"{name}_{codec}"] = {"batch": batch, "clip": f"{frames}x{size}x{size}",
                                     "batches_per_s": rate, "train_steps_per_s": step_rate,
                                     "headroom": round(rate / step_rate, 1)}
  print(json.dumps({"cpu_count": os.cpu_count(), "ingest": ingest_results, "codecs": codecs,
                    "loader": loader}, indent=2))


if __name__ == "__main__":
  app.run(main)
