"""Latent space end to end: data_prep.cache_latents -> training on cached latents (and cached T5
embeddings) with no VAE or encoder in the step -> vdit.sample decoding with the VAE.

The VAE and T5 are tiny random networks written as weight files (no network, no pretrained
weights); the data is a small toy world of 5-frame 16x16 clips (2 latent frames of 2x2).
"""
import os

import numpy as np
import pytest

from tests import helpers, tiny
from tests.tiny_weights import t5_files, vae_file
from vdit.vae import latents
from vdit.data import dataset_files, latent_records


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
  from data_prep import cache_latents
  root = tmp_path_factory.mktemp("latent")
  data = helpers.make_toy_data(root / "data", num_clips=24, num_frames=5, size=16)
  vae = vae_file(root / "vae.safetensors", seed=0)
  t5_dir, spm_file = t5_files(str(root / "t5"))
  cache_dir = str(root / "cache")
  cache_latents.cache(data, vae, cache_dir, batch_size=8, t5_path=t5_dir, tokenizer_path=spm_file, text_length=32)
  return dict(root=root, data=data, vae=vae, cache=cache_dir, t5=t5_dir, spm=spm_file)


def _config(c, **overrides):
  # text.depth 0: word embeddings only (as configs/toy.py), a layer less in every program to compile.
  return tiny.tiny_config(c["cache"], **{"latent.vae": c["vae"], "model.in_channels": 4, "model.patch_size": (1, 1, 1),
                                         "data.num_frames": 0, "sample.num_frames": 5, "train.num_steps": 2,
                                         "train.checkpoint_every": 2, "train.conditioning_max_frames": 1,
                                         "text.depth": 0, **overrides})


def test_cache_holds_the_vae_posterior_of_each_clip(cached):
  metadata = dataset_files.read_metadata(cached["cache"])
  (bucket,) = metadata["buckets"]
  assert (bucket["name"], bucket["num_clips"], bucket["pixel_frames"]) == ("2x2x2", 24, 5)
  info = metadata["latents"]
  assert info["vae_sha256"] == latents.file_digest(cached["vae"]) and info["channels"] == 4
  assert info["text"]["dim"] == 16 and info["text"]["max_length"] == 32
  pixels = dataset_files.read_clips(cached["data"])
  from array_record.python import array_record_module
  reader = array_record_module.ArrayRecordReader(bucket["shard_paths"][0])
  record = latent_records.decode(reader.read([0])[0])
  reader.close()
  # Shard order is kept: record 0 of shard 0 is the source's first clip.
  space = latents.load_vae_space(cached["vae"])
  mean, std = space.posterior(pixels[0]["frames"][None].astype(np.float32) / 127.5 - 1.0)
  np.testing.assert_allclose(record["latent_mean"], np.asarray(mean)[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(record["latent_std"], np.asarray(std)[0], rtol=1e-5, atol=1e-6)
  assert record["caption"] == pixels[0]["caption"] and record["colour"] == pixels[0]["colour"]
  assert record["text_embedding"].shape[1] == 16 and 1 <= len(record["text_embedding"]) <= 32


@pytest.mark.slow
def test_train_on_cached_latents_and_sample_pixels(cached, tmp_path):
  """(vdit.sample's CLI on a latent workdir runs in tests/test_wan_workdir.py; here in process.)"""
  from vdit.config import config_io
  from vdit.training import dit_trainer as train
  from vdit.model import factory
  from vdit.diffusion.generation import VideoSampler
  from vdit.media.pixels import to_uint8
  from vdit.text.tokenizer import Tokenizer
  workdir = str(tmp_path / "run")
  state = train.train_and_evaluate(_config(cached), workdir)
  saved = config_io.load(workdir)
  assert saved.latent.vae == cached["vae"] and (saved.sample.num_frames, saved.sample.height) == (5, 16)
  graphdef, _ = factory.abstract_model(saved)
  sampler = VideoSampler(graphdef, state["ema"], Tokenizer(saved.text.max_length), space=latents.from_config(saved))
  video = sampler.generate(["a red circle moving left"], [0], num_frames=5, height=16, width=16, channels=3,
                           patch_size=(1, 1, 1), steps=2, cfg=2.0)
  assert to_uint8(video).shape == (1, 5, 16, 16, 3)  # 2 latent frames of 2x2 decoded to pixels


@pytest.mark.slow
def test_train_on_cached_t5_embeddings(cached, tmp_path):
  from vdit.training import dit_trainer as train
  config = _config(cached, **{"text.encoder": "t5", "text.dim": 16, "text.max_length": 32, "text.t5_path": cached["t5"],
                              "text.tokenizer_path": cached["spm"]})
  state = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not any("text_encoder" in str(k) for k in state["params"])  # nothing of the encoder is trained
  # Sampling runs the frozen encoder on the prompt (in process: the CLI path is the test above).
  from vdit.config import config_io
  from vdit.model import factory
  from vdit.diffusion.generation import VideoSampler
  from vdit.text import conditioner
  saved = config_io.load(str(tmp_path / "run"))
  text = conditioner.for_sampling(saved)
  emb, mask = text.encode_batch(["a red circle"])
  assert emb.shape == (1, 32, 16) and not emb[0, mask[0].sum():].any()
  graphdef, _ = factory.abstract_model(saved)
  sampler = VideoSampler(graphdef, state["ema"], text, space=latents.from_config(saved))
  image = sampler.generate(["a red circle"], [0], num_frames=1, height=16, width=16, channels=3,
                           patch_size=(1, 1, 1), steps=2, cfg=2.0)
  assert image.shape == (1, 1, 16, 16, 3) and np.all(np.abs(np.asarray(image)) <= 1)


def test_latents_cached_with_another_vae_are_refused(cached, tmp_path):
  from vdit.config import prepare
  other = vae_file(tmp_path / "other.safetensors", seed=1)
  with pytest.raises(latents.LatentSpaceError, match=r"different VAE .*other.safetensors"):
    prepare.for_training(_config(cached, **{"latent.vae": other}))
  with pytest.raises(latents.LatentSpaceError, match="holds pixel clips; cache latents first"):
    prepare.for_training(_config(cached, **{"data.dir": cached["data"]}))
  with pytest.raises(latents.LatentSpaceError, match="holds VAE latents"):
    prepare.for_training(_config(cached, **{"latent.vae": ""}))
  with pytest.raises(latents.LatentSpaceError, match="set model.in_channels=4"):
    prepare.for_training(_config(cached, **{"model.in_channels": 3}))
  with pytest.raises(latents.LatentSpaceError, match="does not exist"):
    prepare.for_training(_config(cached, **{"latent.vae": str(tmp_path / "missing.safetensors")}))


def test_cache_refuses_to_overwrite_and_bad_sizes(cached, tmp_path):
  from data_prep import cache_latents
  from vdit.data.errors import DataError
  with pytest.raises(DataError, match="already holds a complete dataset"):
    cache_latents.cache(cached["data"], cached["vae"], cached["cache"])
  odd = helpers.make_toy_data(tmp_path / "odd", num_clips=8, num_frames=5, size=12)
  with pytest.raises(DataError, match="12x12: the VAE needs multiples of 8"):
    cache_latents.cache(odd, cached["vae"], str(tmp_path / "odd_cache"))
  assert not os.path.exists(tmp_path / "odd_cache" / "metadata.json")
