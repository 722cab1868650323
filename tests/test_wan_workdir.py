"""A released Wan 2.1 pipeline folder (diffusers layout) -> `vdit.convert --workdir` -> `vdit.sample`.

The pipeline is tiny and random (transformer as in test_wan_dit, VAE and umT5 from tiny_weights),
written in the released folder layout: transformer/, vae/, text_encoder/, tokenizer/spiece.model.
"""
import json
import os

import numpy as np
import pytest

from tests import helpers
from tests.test_wan_dit import _WAN, _random_wan
from tests.tiny_weights import diffusers_vae_folder, t5_files
from vdit.core import weights


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
  root = tmp_path_factory.mktemp("wan_pipeline")
  os.makedirs(root / "transformer")
  weights.save(str(root / "transformer" / "diffusion_pytorch_model.safetensors"), _random_wan(_WAN))
  (root / "transformer" / "config.json").write_text(json.dumps(_WAN))
  diffusers_vae_folder(root / "vae", seed=0)
  folder, spm = t5_files(str(root / "text_encoder"))
  os.makedirs(root / "tokenizer")
  os.replace(spm, root / "tokenizer" / "spiece.model")
  return root


def test_converted_release_samples_with_vdit_sample(pipeline, tmp_path):
  workdir = tmp_path / "wan"
  run = helpers.cli("vdit.convert", "--from=wan2.1", f"--input={pipeline}", f"--workdir={workdir}")
  assert run.returncode == 0, run.stderr[-2000:]
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"]["variant"] == "wan" and config["text"]["encoder"] == "t5"
  assert config["sample"]["sampler"] == "unipc" and config["sample"]["num_frames"] == 81
  # bfloat16 compute (the release's) is emulated slowly on CPU; dtype is runtime-only, so switch it.
  config["model"]["dtype"] = "float32"
  (workdir / "config.json").write_text(json.dumps(config))
  out = tmp_path / "samples"
  run = helpers.cli("vdit.sample", f"--workdir={workdir}", "--prompt=a red circle", f"--out={out}", "--steps=2",
                    "--num_frames=5", "--height=16", "--width=16", "--batch_size=8")
  assert run.returncode == 0, run.stderr[-2000:]
  from vdit.media import video_reader
  frames = video_reader.read_video(str(out / "000.mp4"))
  assert frames.shape[:3] == (5, 64, 64)


def test_converted_params_are_the_release_tensors(pipeline, tmp_path):
  """The checkpoint holds exactly the converter's DiT tensors (what test_wan_dit checks against diffusers)."""
  import jax
  from vdit.core import checkpoint as ckpt_lib
  from vdit.config import config_io
  from vdit.interop.wan import dit_weights as convert
  from vdit.parallel import sharding
  from vdit.model import factory
  from vdit.interop.wan import workdir as wan_workdir
  workdir = str(tmp_path / "wan")
  wan_workdir.build(str(pipeline), workdir)
  config = config_io.load(workdir)
  checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir), read_only=True)
  params = checkpointer.restore_item(0, "ema", factory.abstract_params(config, sharding.make_mesh({"data": -1})))
  tensors = convert.convert_state_dict(convert.read_weights(str(pipeline / "transformer")),
                                       convert.read_config(str(pipeline / "transformer" / "config.json")))
  np.testing.assert_array_equal(np.asarray(params["dit"]["head"]["kernel"]), tensors["head.kernel"])
  np.testing.assert_array_equal(np.asarray(params["dit"]["blocks"]["self_attn"]["query"]["kernel"]),
                                tensors["blocks.self_attn.query.kernel"])
  assert len(jax.tree.leaves(params)) == len(tensors)
  with pytest.raises(ckpt_lib.CheckpointError, match="already holds a model"):
    wan_workdir.build(str(pipeline), workdir)


def test_missing_tokenizer_is_one_clear_error(pipeline, tmp_path):
  import shutil
  broken = tmp_path / "broken"
  shutil.copytree(pipeline, broken)
  os.remove(broken / "tokenizer" / "spiece.model")
  from vdit.interop.wan import workdir as wan_workdir
  with pytest.raises(weights.WeightsError, match=r"Tokenizer file .*tokenizer/spiece.model' does not exist"):
    wan_workdir.build(str(broken), str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()  # checked before anything is written
