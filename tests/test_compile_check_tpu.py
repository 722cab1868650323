"""vdit.compile_check for a real TPU slice from this CPU host (libtpu describes and compiles for it):
splash attention at a length that is no tile multiple compiles into its Mosaic kernel, and a step
that XLA finds cannot fit is the ordinary "would not fit" (JSON, exit 1), not a crash.

Needs libtpu (`pip install "jax[tpu]==<installed jax version>"`, no TPU); CI does not install it (213 MB, ~1 min of the suite's
8-minute budget), so run these where it is installed: `pytest -m tpu`.
"""
import importlib.util
import json

import pytest

from tests.helpers import cli

pytestmark = [pytest.mark.tpu, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                 reason="libtpu is not installed: pip install 'jax[tpu]==<installed jax version>' (no TPU needed)")]


def test_splash_compiles_its_kernel_at_any_length_for_a_tpu_slice():
  # 4 frames of 32x32 in (2, 8, 8) patches: 32 video tokens and 12 text tokens, neither a multiple
  # of splash's 128-token tile (padded, not refused, not run densely).
  result = cli("vdit.compile_check", "--config=tests/tiny.py", "--height=32", "--width=32", "--topology=tpu:v5e:2x2",
               "--config.model.attention=splash")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout)
  assert report["device_kind"].startswith("TPU v5") and report["num_devices"] == 4
  assert report["attention"] == "splash" and report["fused_kernel_calls"] > 0
  assert report["fits"] is True and report["memory_limit_gib"] == 16


def test_out_of_memory_found_by_xla_is_would_not_fit():
  # Dense attention over 32,768 tokens: 4 GiB of scores per head and clip, far over a v5e's 16 GiB.
  result = cli("vdit.compile_check", "--config=tests/tiny.py", "--num_frames=16", "--height=512", "--width=512",
               "--topology=tpu:v5e:2x2", "--config.model.attention=xla")
  assert result.returncode == 1, result.stderr[-3000:]
  report = json.loads(result.stdout)
  assert report["fits"] is False and report["memory_per_device"] is None
  assert "RESOURCE_EXHAUSTED" in report["out_of_memory"] or "exceeds" in report["out_of_memory"]
  assert "would not fit on tpu:v5e:2x2: XLA:" in result.stderr and "Traceback" not in result.stderr
