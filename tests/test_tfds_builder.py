"""The vdit_clips TFDS builder: a prepared folder becomes an ArrayRecord TFDS dataset, read back
exactly through tfds.data_source (built from Python and with the `tfds build` CLI)."""
import collections
import importlib.util
import json
import os
import subprocess
import sys

from array_record.python import array_record_module
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vdit.toy import world as toy_world
from data_prep.vdit_clips import VditClips
from tests.helpers import REPO, cli_env
from vdit.data import dataset_files, records
from vdit.data.errors import DataError

_NUM_IMAGES = 3


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """A toy bucket 4x16x16 (8 clips, 2 shards) plus a hand-written image bucket 1x16x24."""
  directory = tmp_path_factory.mktemp("prepared")
  toy_world.generate(str(directory), num_clips=8, num_frames=4, height=16, width=16, num_shards=2,
                     num_held_out=4, seed=0)
  rng = np.random.default_rng(1)
  images = [records.encode_clip(rng.integers(0, 256, (1, 16, 24, 3), dtype=np.uint8),
                                f"image {i}", source="x.mp4", kind="image")
            for i in range(_NUM_IMAGES)]
  dataset_files.write_shard(str(directory / "images-00000.array_record"), images)
  with open(directory / "metadata.json", encoding="utf-8") as f:
    metadata = json.load(f)
  metadata["buckets"].append({"name": "1x16x24", "num_frames": 1, "height": 16, "width": 24,
                              "num_clips": _NUM_IMAGES, "shards": ["images-00000.array_record"],
                              "clips_per_shard": [_NUM_IMAGES]})
  metadata["num_clips"] += _NUM_IMAGES
  dataset_files.write_json(str(directory / "metadata.json"), metadata)
  return str(directory)


def _originals(prepared):
  """(caption, frames bytes, shape) of every clip in the prepared folder, as a multiset."""
  out = collections.Counter()
  for bucket in dataset_files.read_metadata(prepared)["buckets"]:
    for path in bucket["shard_paths"]:
      reader = array_record_module.ArrayRecordReader(path)
      for data in reader.read_all():
        clip = records.decode_clip(data)
        out[(clip["caption"], clip["frames"].tobytes(), clip["frames"].shape)] += 1
      reader.close()
  return out


def _check_readable(data_dir, prepared):
  source = tfds.data_source("vdit_clips", data_dir=data_dir)["train"]
  assert len(source) == 8 + _NUM_IMAGES
  read = collections.Counter()
  for i in range(len(source)):
    example = source[i]
    video = np.stack(example["video"])  # data_source gives a Video as a list of frames.
    assert video.dtype == np.uint8
    read[(example["caption"].decode(), video.tobytes(), video.shape)] += 1
  assert read == _originals(prepared)


def test_build_and_read_back_exactly(prepared, tmp_path):
  out = str(tmp_path / "tfds")
  builder = VditClips(data_dir=out)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=prepared),
      file_format="array_record")
  assert builder.info.splits["train"].num_examples == 8 + _NUM_IMAGES
  _check_readable(out, prepared)

  source = builder.as_data_source()["train"]
  by_bucket = collections.defaultdict(list)
  for i in range(len(source)):
    by_bucket[source[i]["bucket"]].append(source[i])
  assert sorted(by_bucket) == [b"1x16x24", b"4x16x16"]
  image = by_bucket[b"1x16x24"][0]
  assert np.stack(image["video"]).shape == (1, 16, 24, 3)
  assert (image["source"], image["kind"]) == (b"x.mp4", b"image")
  toy = by_bucket[b"4x16x16"][0]
  # Toy clips carry no source/kind/motion: defaults fill them.
  assert (toy["source"], toy["kind"], toy["motion"]) == (b"", b"video", 0.0)


def test_bad_manual_dir_names_metadata(tmp_path):
  bad = tmp_path / "not_prepared"
  bad.mkdir()
  (bad / "readme.txt").write_text("no dataset here")
  with pytest.raises(DataError, match="metadata.json"):
    VditClips(data_dir=str(tmp_path / "tfds")).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(bad)),
        file_format="array_record")


# tfds 4.9.10's CLI imports apache_beam and mlcroissant at start-up, even for `tfds build`, yet
# neither is a tfds dependency. Without them, run the same CLI entry point with stand-in modules
# (building this dataset uses neither).
_CLI_WITHOUT_EXTRAS = (
    "import sys, types\n"
    "class Stub(types.ModuleType):\n"
    "  def __getattr__(self, name):\n"
    "    if name.startswith('__'):\n"
    "      raise AttributeError(name)\n"
    "    return object\n"
    "sys.modules.update(apache_beam=Stub('apache_beam'), mlcroissant=Stub('mlcroissant'))\n"
    "from tensorflow_datasets.scripts.cli.main import launch_cli\n"
    "sys.argv[0] = 'tfds'\n"
    "launch_cli()\n")


def test_tfds_build_cli(prepared, tmp_path):
  out = str(tmp_path / "tfds_cli")
  args = ["build", "data_prep/vdit_clips",
          f"--manual_dir={prepared}", f"--data_dir={out}",
          "--file_format=array_record"]
  if all(importlib.util.find_spec(m) for m in ("apache_beam", "mlcroissant")):
    command = [os.path.join(os.path.dirname(sys.executable), "tfds"), *args]
  else:
    command = [sys.executable, "-c", _CLI_WITHOUT_EXTRAS, *args]
  result = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  _check_readable(out, prepared)
  # A fresh process that never imports the builder reads the dataset from its files alone.
  read = subprocess.run(
      [sys.executable, "-c", "import sys, tensorflow_datasets as tfds; "
       "print(len(tfds.data_source('vdit_clips', data_dir=sys.argv[1])['train']))", out],
      cwd=str(tmp_path), env=cli_env(), capture_output=True, text=True, timeout=120)
  assert read.returncode == 0, read.stderr[-3000:]
  assert read.stdout.split()[-1] == str(8 + _NUM_IMAGES)
