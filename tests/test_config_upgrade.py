"""Workdirs written before the config format was versioned still load, upgrade and sample the same."""
import json
import shutil

import numpy as np
import pytest

from tests.helpers import REPO, cli
from vdit.config import config_io, upgrade
from vdit.core.errors import ConfigError
from vdit.media import video_reader

V1_WORKDIR = f"{REPO}/tests/data/workdir_v1"
V1_SAMPLE = f"{REPO}/tests/data/workdir_v1_sample_seed3.gif"


def test_v1_config_upgrades_to_the_current_version_with_the_old_behaviour():
  config = config_io.load(V1_WORKDIR)
  assert config.config_version == upgrade.VERSION == 6
  # Keys absent from a version-1 file take the behaviour that workdir had, not today's defaults.
  assert (config.model.variant, config.model.attention, config.text.encoder) == ("vdit", "xla", "trainable")
  assert config.text.vocab_size > 0 and config.model.patch_size == (2, 8, 8)
  assert config.sample.cache == "none"
  assert config.lora.rank == 0 and config.finetune.base == ""  # no adapters
  assert config.sample.frame_cfg == 0.0  # frames and text guided together, as then
  assert config.text.positions is False  # no position embeddings, as then


def test_v2_config_gains_what_version_3_added_at_the_old_behaviour():
  raw = upgrade.upgrade(json.load(open(f"{V1_WORKDIR}/config.json")))
  raw["config_version"] = 2
  del raw["sample"]["cache"]
  upgraded = upgrade.upgrade(raw)
  assert upgraded["config_version"] == 6 and upgraded["sample"]["cache"] == "none"


def test_v3_config_gains_the_lora_sections_without_adapters():
  raw = upgrade.upgrade(json.load(open(f"{V1_WORKDIR}/config.json")))
  raw["config_version"] = 3
  del raw["lora"], raw["finetune"]
  upgraded = upgrade.upgrade(raw)
  assert upgraded["config_version"] == 6 and upgraded["lora"]["rank"] == 0 and upgraded["finetune"]["base"] == ""
  from vdit.config import config_io as io
  assert not any(k.startswith("lora.") for k in io.model_signature(upgraded))  # old checkpoints still match


def test_a_v1_workdir_samples_the_same_frames_as_the_code_that_wrote_it(tmp_path):
  workdir = tmp_path / "workdir"
  shutil.copytree(V1_WORKDIR, workdir)  # sampling only reads, but never risk the fixture
  result = cli("vdit.sample", f"--workdir={workdir}", "--prompt=a red circle moving left", f"--out={tmp_path / 'out'}",
               "--seed=3", "--steps=3")
  assert result.returncode == 0, result.stderr[-3000:]
  np.testing.assert_array_equal(video_reader.read_video(str(tmp_path / "out" / "000.gif")),
                                video_reader.read_video(V1_SAMPLE))


def test_a_config_from_a_newer_vdit_or_with_unknown_keys_is_refused(tmp_path):
  raw = json.load(open(f"{V1_WORKDIR}/config.json"))
  for change, message in (({"config_version": 99}, "newer than this vdit"), ({"model": {"wings": 2}}, "model.wings")):
    (tmp_path / "config.json").write_text(json.dumps({**raw, **change} if "config_version" in change
                                                     else {**raw, "model": {**raw["model"], **change["model"]}}))
    with pytest.raises(ConfigError, match=message):
      config_io.load(str(tmp_path))
