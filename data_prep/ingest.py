"""Turns a folder (or manifest) of videos and images into bucketed training shards.

  python -m data_prep.ingest --input=VIDEOS_DIR_OR_MANIFEST --output=DATA_DIR \
      [--config=configs/videos.py] [--workers=N] [--config.ingest.fps=12]

Inputs are split into jobs of `ingest.files_per_shard` files; each job decodes its files
(data_prep.clip_extract), writes one ArrayRecord shard per bucket it produced, then a job
marker (DATA_DIR/jobs/job-NNNNN.json) that records its report entries. A rerun skips jobs whose
marker matches the same inputs and settings. metadata.json is removed when a run starts and
written last, listing only finished shards, so an interrupted run leaves nothing a reader
accepts; rerunning finishes it.

DATA_DIR/report.json accounts for every input:
  {"inputs": N, "clips_written": M, "ok": n, "dropped": N - n,
   "files": [{"path", "status": "ok"|"dropped", "reason", "clips", ...}],
   "dropped_by_reason": {...}, "clips_by_bucket": {...}}
"""
import collections
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import re
import sys

from absl import flags
from ml_collections import config_flags

import configs
from data_prep import bucket_table, clip_extract, ingest_inputs
from vdit.core import command
from vdit.core.errors import UserError
from vdit.data import dataset_files, records

_SHARD_RE = re.compile(r"^\d+x\d+x\d+/part-\d{5}\.array_record$")
# A shard a killed job left under its temporary name (dataset_files.ShardGroup).
_TEMPORARY_RE = re.compile(r"^\d+x\d+x\d+/\.part-\d{5}\.array_record\.[0-9a-f]+\.tmp$")


def _settings(ingest) -> dict:
  bucket_table.BucketTable.from_config(ingest)  # validates the table before any work
  if ingest.codec not in records.CODECS:
    raise bucket_table.BucketTableError(
        f"config.ingest.codec={ingest.codec!r}; choose one of {records.CODECS}.")
  if ingest.fps <= 0 or ingest.files_per_shard < 1 or ingest.max_clips_per_segment < 1:
    raise bucket_table.BucketTableError(
        "config.ingest.fps, files_per_shard and max_clips_per_segment must be positive.")
  return ingest.to_dict()


def _fingerprint(settings: dict, inputs: list[dict]) -> str:
  """Identifies a job's work: settings, and each input's path, size, mtime and caption."""
  def stat(path):
    try:
      info = os.stat(path)
      return [info.st_size, info.st_mtime_ns]
    except OSError:
      return None
  keyed = [[i["path"], i["caption"], i["problem"], stat(i["full_path"])] for i in inputs]
  blob = json.dumps([settings, keyed], sort_keys=True, ensure_ascii=False)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _process_file(item: dict, table, settings: dict, shards, shard_name: str) -> dict:
  """Writes one input's clips into `shards` (a dataset_files.ShardGroup), in each bucket's file
  `shard_name`, as they are made;
  returns its report entry. Never raises: a failure drops the file (or, after some clips were
  written, keeps them and notes where it stopped)."""
  entry = {"path": item["path"], "status": "dropped", "reason": item["problem"], "clips": 0}
  if item["problem"]:
    if item["detail"]:
      entry["detail"] = item["detail"]
    return entry

  def write(clip):
    t, h, w = clip.frames.shape[:3]
    bucket = dataset_files.bucket_name(t, h, w)
    shards.add(f"{bucket}/{shard_name}", records.encode_clip(
        clip.frames, item["caption"], codec=settings["codec"], quality=settings["quality"],
        source=item["path"], start_time=round(clip.start_time, 4), fps=settings["fps"],
        source_height=clip.source_size[0], source_width=clip.source_size[1], bucket=bucket,
        motion=round(clip.motion, 5), kind=clip.kind))
    entry["clips"] += 1

  try:
    result = clip_extract.extract(
        item["full_path"], table, fps=settings["fps"], scene_threshold=settings["scene_threshold"],
        min_motion=settings["min_motion"], max_clips_per_segment=settings["max_clips_per_segment"],
        on_clip=write)
  except clip_extract.video_reader.VideoReadError as e:
    entry.update(reason=e.reason, detail=str(e))
    return entry
  except Exception as e:  # a decoder bug on one file must not end the run
    if entry["clips"]:
      entry.update(status="ok", reason="", detail=f"stopped early: {type(e).__name__}: {e}")
    else:
      entry.update(reason="decode_error", detail=f"{type(e).__name__}: {e}")
    return entry
  if result.source_size:
    entry["source_size"] = list(result.source_size)
  if result.dropped:
    entry["segments_dropped"] = dict(result.dropped)
  if entry["clips"]:
    entry.update(status="ok", reason="", kind=result.kind)
  else:
    entry["reason"] = result.dropped.most_common(1)[0][0] if result.dropped else "no_clips"
    entry["detail"] = _why(entry["reason"], result.source_size, settings)
  return entry


def _why(reason: str, size, settings: dict) -> str:
  """A human explanation of a drop decided while extracting clips."""
  h, w = size or (0, 0)
  return {
      "too_small": f"{h}x{w} needs more than {settings['max_upscale']}x upscaling to fit any of "
                   f"the sizes {list(settings['sizes'])}",
      "extreme_aspect_ratio": f"{h}x{w} would lose more than {settings['max_crop_fraction']:.0%} "
                              f"of its area to a centre crop to any of {list(settings['sizes'])}",
      "too_short": f"every scene is shorter than {min(settings['frame_counts'])} frames at "
                   f"{settings['fps']} fps",
      "static": f"every clip moves less than min_motion={settings['min_motion']}",
  }.get(reason, "no clip could be taken")


def run_job(job: int, inputs: list[dict], settings: dict, fingerprint: str, output: str) -> dict:
  """Ingests one job's files; writes its shards (streamed, renamed into place at the end), then
  its marker; returns the marker."""
  table = bucket_table.BucketTable.from_config(settings)
  name = f"part-{job:05d}.array_record"
  with dataset_files.ShardGroup(output) as shards:
    entries = [_process_file(item, table, settings, shards, name) for item in inputs]
    counts = shards.commit()
  by_bucket = {path.split("/")[0]: {"path": path, "clips": n} for path, n in counts.items()}
  marker = {"job": job, "fingerprint": fingerprint, "files": entries, "shards": by_bucket}
  dataset_files.write_json(_marker_path(output, job), marker)
  return marker


def _marker_path(output: str, job: int) -> str:
  return os.path.join(output, "jobs", f"job-{job:05d}.json")


def _finished_marker(output: str, job: int, fingerprint: str) -> dict | None:
  try:
    with open(_marker_path(output, job), encoding="utf-8") as f:
      marker = json.load(f)
  except (OSError, ValueError):
    return None
  shards_ok = all(os.path.isfile(os.path.join(output, s["path"]))
                  for s in marker.get("shards", {}).values())
  return marker if marker.get("fingerprint") == fingerprint and shards_ok else None


def run_pending(pending, settings, output, workers, progress, job_fn=run_job) -> dict:
  """Runs (job, inputs, fingerprint) items with `job_fn` (run_job) in a process pool. If a worker
  dies (a decoder crash), every job it took down is retried alone; one that still kills its
  worker has its files reported as worker_crashed."""
  if workers == 1:
    markers = {}
    for job, inputs, fp in pending:
      markers[job] = job_fn(job, inputs, settings, fp, output)
      progress(len(inputs))
    return markers
  markers, broken = _pool_run(pending, settings, output, workers, progress, job_fn)
  for item in broken:
    done, still_broken = _pool_run([item], settings, output, 1, progress, job_fn)
    markers.update(done)
    for job, inputs, _ in still_broken:
      markers[job] = {"job": job, "fingerprint": None, "shards": {}, "files": [
          {"path": i["path"], "status": "dropped", "reason": "worker_crashed", "clips": 0,
           "detail": "the decoding process died on this job's files"} for i in inputs]}
      progress(len(inputs))
  return markers


def _pool_run(jobs, settings, output, workers, progress, job_fn):
  """(markers of finished jobs, jobs lost to a dead worker)."""
  markers, broken = {}, []
  context = multiprocessing.get_context("spawn")  # workers inherit no threads or locks
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
    futures = {pool.submit(job_fn, job, inputs, settings, fp, output): (job, inputs, fp)
               for job, inputs, fp in jobs}
    for future in concurrent.futures.as_completed(futures):
      try:
        markers[futures[future][0]] = future.result()
        progress(len(futures[future][1]))
      except concurrent.futures.process.BrokenProcessPool:
        broken.append(futures[future])
  return markers, sorted(broken, key=lambda item: item[0])


def _remove_orphans(output: str, keep: set) -> None:
  """Deletes shards no job marker lists (from an earlier run with other inputs or settings) and
  temporary files of killed jobs."""
  for root, _, names in os.walk(output):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), output).replace(os.sep, "/")
      if (_SHARD_RE.match(rel) and rel not in keep) or _TEMPORARY_RE.match(rel):
        os.remove(os.path.join(output, rel))
    if re.fullmatch(r"\d+x\d+x\d+", os.path.basename(root)) and not os.listdir(root):
      os.rmdir(root)  # a bucket no finished job has any more


def ingest(input_path: str, output: str, ingest_config, workers: int = 0, progress=None) -> dict:
  """Runs the whole ingest; returns the report (also written to OUTPUT/report.json)."""
  settings = _settings(ingest_config)
  items = [vars(i) for i in ingest_inputs.discover(
      input_path, allow_missing_captions=settings["allow_missing_captions"], exclude=output)]
  if not items:
    raise ingest_inputs.InputError(f"--input={input_path!r} holds no files.")
  metadata_path = os.path.join(output, "metadata.json")
  _check_output_is_ours(output, metadata_path)
  os.makedirs(os.path.join(output, "jobs"), exist_ok=True)
  if os.path.exists(metadata_path):
    os.remove(metadata_path)  # the dataset is incomplete until this run finishes

  size = settings["files_per_shard"]
  jobs = [(j, items[s:s + size]) for j, s in enumerate(range(0, len(items), size))]
  markers, pending = {}, []
  for job, inputs in jobs:
    fingerprint = _fingerprint(settings, inputs)
    marker = _finished_marker(output, job, fingerprint)
    if marker:
      markers[job] = marker
    else:
      pending.append((job, inputs, fingerprint))
  workers = workers or os.cpu_count() or 1
  markers.update(run_pending(pending, settings, output, min(workers, max(1, len(pending))),
                              progress or (lambda n: None)))
  for name in os.listdir(os.path.join(output, "jobs")):  # markers of jobs this run no longer has
    match = re.fullmatch(r"job-(\d+)\.json", name)
    if match and int(match.group(1)) >= len(jobs):
      os.remove(os.path.join(output, "jobs", name))

  entries = [e for job in sorted(markers) for e in markers[job]["files"]]
  buckets = collections.defaultdict(list)
  for job in sorted(markers):
    for bucket, shard in markers[job]["shards"].items():
      buckets[bucket].append(shard)
  _remove_orphans(output, {s["path"] for shards in buckets.values() for s in shards})
  report = _report(entries, buckets)
  dataset_files.write_json(os.path.join(output, "report.json"), report)
  if report["clips_written"]:
    dataset_files.write_json(metadata_path, _metadata(buckets, settings, report))
  return report


def _check_output_is_ours(output: str, metadata_path: str) -> None:
  """Refuses an --output that holds something other than an ingest dataset (we delete there)."""
  if not os.path.isdir(output) or not os.listdir(output):
    return
  generator = None
  if os.path.exists(metadata_path):
    try:
      with open(metadata_path, encoding="utf-8") as f:
        generator = json.load(f).get("generator")
    except (OSError, ValueError, AttributeError):
      generator = "unknown"
  elif os.path.isdir(os.path.join(output, "jobs")):
    generator = "data_prep.ingest"  # an interrupted ingest: resume it
  if generator != "data_prep.ingest":
    raise ingest_inputs.InputError(
        f"--output={output!r} is not empty and holds no ingest dataset (it may be another "
        "dataset or unrelated files); choose a new or empty folder.")


def _report(entries, buckets) -> dict:
  ok = sum(e["status"] == "ok" for e in entries)
  return {
      "inputs": len(entries),
      "clips_written": sum(e["clips"] for e in entries),
      "ok": ok,
      "dropped": len(entries) - ok,
      "dropped_by_reason": dict(sorted(collections.Counter(
          e["reason"] for e in entries if e["status"] == "dropped").items())),
      "clips_by_bucket": {b: sum(s["clips"] for s in shards) for b, shards in sorted(buckets.items())},
      "files": entries,
  }


def _metadata(buckets, settings, report) -> dict:
  table = []
  for name, shards in sorted(buckets.items(), key=lambda kv: [int(x) for x in kv[0].split("x")]):
    t, h, w = (int(x) for x in name.split("x"))
    table.append({"name": name, "num_frames": t, "height": h, "width": w,
                  "num_clips": sum(s["clips"] for s in shards),
                  "shards": [s["path"] for s in shards],
                  "clips_per_shard": [s["clips"] for s in shards]})
  return {"format": dataset_files.FORMAT, "version": dataset_files.VERSION,
          "record_format_version": records.FORMAT_VERSION, "num_clips": report["clips_written"],
          "fps": settings["fps"], "codec": settings["codec"], "generator": "data_prep.ingest",
          "ingest": settings, "buckets": table}


def define_flags():
  config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(configs.__file__), "videos.py"),
      "Config whose `ingest` section sets the buckets and filters.", lock_config=True)
  command.define_path("input", None, "Folder of videos/images (captions in sidecar .txt), or a .jsonl/.csv "
                      "manifest with 'file' and 'caption'.", kind="any", required=True)
  flags.DEFINE_string("output", None, "Dataset directory to write.", required=True)
  flags.DEFINE_integer("workers", 0, "Decoding processes (0: one per CPU core).", lower_bound=0)


def main(f):
  from tqdm import tqdm
  try:
    with tqdm(desc="ingest", unit="file", file=sys.stderr) as bar:
      report = ingest(f.input, f.output, f.config.ingest, f.workers, progress=bar.update)
  except OSError as e:  # e.g. an --output that cannot be written
    raise UserError(f"{e}; check --input and --output.") from None
  print(f"{report['inputs']} inputs: {report['ok']} ok, {report['dropped']} dropped "
        f"{report['dropped_by_reason']}; {report['clips_written']} clips in "
        f"{len(report['clips_by_bucket'])} buckets {report['clips_by_bucket']}. "
        f"Report: {os.path.join(f.output, 'report.json')}")
  if not report["clips_written"]:
    print("error: no clips were written, so there is no dataset; see the report's reasons.", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  command.run(main, define_flags)
