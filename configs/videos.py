"""Train on your own videos: a prepared (ingested) folder, every bucket, images mixed in.

Prepare the data (sizes, clip lengths, fps and filters are this config's `ingest` section):
  python -m data_prep.ingest --input=MY_VIDEOS --output=runs/my_data --config=configs/videos.py
Train:
  python -m vdit.main --config=configs/videos.py --config.data.dir=runs/my_data --workdir=runs/videos
Sample (size defaults to the most common video bucket):
  python -m vdit.sample --workdir=runs/videos --prompt="..." --out=runs/videos/samples

Try it without your own videos: `python -m data_prep.sample_media --output=MY_VIDEOS` writes a
folder of toy-world clips in several codecs and sizes.

Every step's batch comes from one bucket (frames x height x width); its size keeps about
`data.tokens_per_batch` tokens per step, so short or small buckets get bigger batches. Each
bucket compiles the train step once.

Arguments (`--config=configs/videos.py:steps=20000`): steps.
"""
from configs import base


def get_config(arg: str | None = None):
  args = base.parse_args(arg, steps=20000)
  config = base.default_config()
  config.data.dir = ""  # --config.data.dir=runs/my_data
  config.data.num_frames = 0  # train on each bucket's full clip length
  config.data.tokens_per_batch = 8192
  config.data.image_ratio = 0.1  # of steps drawn from 1-frame (image) buckets, when there are any

  config.ingest.fps = 8.0
  config.ingest.sizes = ("64x64", "48x80", "80x48")
  config.ingest.frame_counts = (8, 16)

  config.model.in_channels = 3
  config.model.patch_size = (1, 8, 8)  # 1-frame patches: images and videos share one tokenizer
  config.model.dim = 256
  config.model.depth = 6
  config.model.num_heads = 4
  config.model.prediction = "x"
  config.text.max_length = 32
  config.text.dim = 128
  config.text.depth = 0

  config.train.num_steps = int(args["steps"])
  config.train.global_batch_size = 16  # used for a bucket only if tokens_per_batch is 0
  config.train.log_every = 50
  config.train.checkpoint_every = 1000
  config.optim.peak_lr = 5e-4
  config.optim.warmup_steps = 500
  config.sample.steps = 30
  config.sample.cfg = 4.0
  config.sample.prompts = ("a red circle moving left", "a blue square moving up")
  config.lock()
  return config
