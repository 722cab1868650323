"""TFDS builder `vdit_clips`: converts a prepared vdit dataset folder into a TFDS dataset.

The input (`--manual_dir`) is a folder written by `python -m data_prep.ingest` or
`python -m data_prep.toy_world`. Every clip of every bucket becomes one example of the single
"train" split; frames are stored as lossless PNG, so they round-trip exactly.

Build (from the repo root; PYTHONPATH lets the builder import vdit):
  PYTHONPATH=. tfds build data_prep/vdit_clips \
      --manual_dir=PREPARED_DIR --data_dir=OUT --file_format=array_record
(equivalently: tfds build vdit_clips --imports=data_prep.vdit_clips ...). tfds 4.9.10's CLI
imports apache-beam and mlcroissant at start-up though building this dataset uses neither:
`pip install -e '.[tfds-cli]'` installs them.

Or build from Python:
  from data_prep.vdit_clips import VditClips
  VditClips(data_dir=OUT).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=PREPARED_DIR),
      file_format="array_record")

Read (random access; the builder need not be imported, TFDS reads OUT/vdit_clips/1.0.0 itself):
  ds = tfds.data_source("vdit_clips", data_dir=OUT)["train"]
  example = ds[0]  # Text fields come back as bytes.
  # data_source decodes a Video as a list of T uint8 [H, W, 3] frames; T, H, W vary by bucket.
  frames = np.stack(example["video"])
"""
from array_record.python import array_record_module
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from vdit.data import dataset_files, records
from vdit.data.errors import DataError

# Records decoded per read, so a large shard never sits in memory whole.
_READ_CHUNK = 256


class VditClips(tfds.core.GeneratorBasedBuilder):
  """Clips of a prepared vdit dataset (all buckets) as one "train" split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Pass --manual_dir=DIR where DIR is a prepared vdit dataset folder (it holds metadata.json and
  ArrayRecord shards), written by
    python -m data_prep.ingest --input=VIDEOS --output=DIR
  or
    python -m data_prep.toy_world --output=DIR
  """

  # tfds 4.9.10 computes this via the `importlib_resources` backport, which it only declares for
  # Python < 3.9 (tensorflow/datasets#11212); it is simply this file (used to look for checksums).
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="Captioned video clips (and single-frame images) from a prepared vdit "
                    "dataset; clips of different buckets have different T x H x W.",
        features=tfds.features.FeaturesDict({
            # Frame count and size vary by bucket; PNG keeps the frames bit-exact.
            "video": tfds.features.Video(shape=(None, None, None, 3), encoding_format="png"),
            "caption": tfds.features.Text(),
            "bucket": tfds.features.Text(),
            "source": tfds.features.Text(),
            "start_time": tfds.features.Scalar(np.float32),
            "motion": tfds.features.Scalar(np.float32),
            "kind": tfds.features.Text(),
        }),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    # read_metadata raises a DataError naming what is wrong with the folder (e.g. no metadata.json).
    metadata = dataset_files.read_metadata(str(dl_manager.manual_dir))
    return {"train": self._generate_examples(metadata["buckets"])}

  def _generate_examples(self, buckets):
    for bucket in buckets:
      expected = (bucket["num_frames"], bucket["height"], bucket["width"], 3)
      for shard_index, path in enumerate(bucket["shard_paths"]):
        for record_index, clip in _read_clips(path):
          frames = clip["frames"]
          if frames.shape != expected:
            raise DataError(f"{path} record {record_index}: frames {frames.shape} do not match "
                            f"bucket {bucket['name']}; regenerate the dataset.")
          # bucket/shard/record is unique within a dataset and stable across rebuilds.
          key = f"{bucket['name']}/{shard_index}/{record_index}"
          yield key, {
              "video": frames,
              "caption": clip["caption"],
              "bucket": bucket["name"],
              "source": clip.get("source", ""),
              "start_time": clip.get("start_time", 0.0),
              "motion": clip.get("motion", 0.0),
              # Older or toy data has no kind; a single frame is an image.
              "kind": clip.get("kind", "video" if frames.shape[0] > 1 else "image"),
          }


def _read_clips(path: str):
  """Yields (record_index, decoded clip) for every record of one ArrayRecord shard."""
  reader = array_record_module.ArrayRecordReader(path)
  try:
    total = reader.num_records()
    for begin in range(0, total, _READ_CHUNK):
      end = min(begin + _READ_CHUNK, total)
      for offset, data in enumerate(reader.read(begin, end)):
        yield begin + offset, records.decode_clip(data)
  finally:
    reader.close()
