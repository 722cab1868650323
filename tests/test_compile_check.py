"""vdit.compile_check: the train step compiled ahead of time for a topology, its memory and fit."""
import importlib.util
import json

import pytest
from tests.helpers import cli, make_toy_data

_TINY = ("--config=tests/tiny.py", "--height=32", "--width=32")
# The pod config with its real width and sharding (fsdp over every device, bf16, full remat), two
# blocks (blocks are scanned: compile time does not grow with depth), word embeddings for the text
# encoder (its blocks would add a fifth of the compile time and nothing to check) and a small clip, for speed.
_POD = ("--config=configs/dit_xl.py", "--config.model.depth=2", "--config.text.depth=0", "--num_frames=2",
        "--height=32", "--width=32", "--config.train.global_batch_size=8")


def _report(result) -> dict:
  assert result.stdout, result.stderr[-3000:]
  return json.loads(result.stdout)


@pytest.mark.slow
def test_tiny_config_compiles_for_cpu8_and_reports_memory(tmp_path):
  # No clip size given: the config's data.num_frames (4) and its data's largest bucket (16x16).
  # Word embeddings for text (as configs/toy.py): a text block adds compile time and nothing to check.
  data = make_toy_data(tmp_path / "data", num_clips=16)
  result = cli("vdit.compile_check", f"--config=tests/tiny.py:{data}", "--config.text.depth=0", "--topology=cpu:8",
               "--memory_per_device_gb=1")
  assert result.returncode == 0, result.stderr[-3000:]
  report = _report(result)
  assert report["num_devices"] == 8 and report["mesh"]["data"] == 8
  assert report["batch_shape"] == [8, 4, 16, 16, 3] and report["bucket"]
  memory = report["memory_per_device"]
  for key in ("argument_bytes", "output_bytes", "temp_bytes", "total_bytes"):
    assert memory[key] > 0, key
  # The train step donates its state: the new state reuses the old one's buffers.
  assert memory["alias_bytes"] > 0.9 * memory["output_bytes"]
  assert report["fits"] is True and report["compile_seconds"] > 0
  assert report["hlo_flops_per_device"] > 0 and report["model_flops_per_device"] == report["model_flops_per_step"] / 8


@pytest.mark.slow
def test_pod_config_compiles_and_too_little_memory_exits_1():
  result = cli("vdit.compile_check", *_POD, "--topology=cpu:8", "--memory_per_device_gb=0.05")
  assert result.returncode == 1, result.stderr[-3000:]
  report = _report(result)
  assert report["mesh"]["fsdp"] == 8 and report["batch_shape"] == [8, 2, 32, 32, 3]
  assert report["fits"] is False and report["memory_per_device"]["total_gib"] > 0.05
  assert "would not fit on cpu:8: needs" in result.stderr and "GiB per device of 0.05 GiB" in result.stderr


def test_mesh_that_does_not_divide_the_devices_exits_2():
  result = cli("vdit.compile_check", *_TINY, "--topology=cpu:4", "--config.mesh.fsdp=3")
  assert result.returncode == 2
  assert "4 devices is not a multiple of 3" in result.stderr and "Traceback" not in result.stderr


def test_batch_that_does_not_split_over_the_mesh_exits_2():
  result = cli("vdit.compile_check", *_TINY, "--topology=cpu:4", "--config.train.global_batch_size=6")
  assert result.returncode == 2
  assert "config.train.global_batch_size=6 does not split" in result.stderr
  assert "4 batch devices x grad_accum_steps=1 on 1 host(s) need a multiple of 4" in result.stderr


def test_unknown_topology_exits_2():
  result = cli("vdit.compile_check", *_TINY, "--topology=tpu:v9:4x4")
  assert result.returncode == 2
  assert "--topology='tpu:v9:4x4' is not one of cpu:N, tpu:CHIP:SHAPE" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is not None, reason="libtpu is installed")
def test_tpu_topology_without_libtpu_exits_2_saying_so():
  result = cli("vdit.compile_check", *_TINY, "--topology=tpu:v5e:4x4")
  assert result.returncode == 2
  assert "libtpu, which is not installed here" in result.stderr
