"""Model FLOP/s and MFU of the training loop, measured over each logging window.

FLOPs per step come from `vdit.training.flops` (a documented formula, per batch shape, so bucket switches
are counted right); the window's wall time ends when the logged metrics reach the host, so
asynchronous dispatch is included. Windows containing a compilation are not reported.
"""
import time

import jax

from vdit.training import flops


class Throughput:

  def __init__(self, config, num_devices: int, device_kind: str, peak_tflops: float = 0.0):
    self._config = config
    self._num_devices = num_devices
    self._peak = peak_tflops * 1e12 if peak_tflops > 0 else flops.peak_flops_per_device(device_kind)
    self._per_shape = {}
    self._reset()

  def restart(self):
    """Starts a new window (after work that is not training: samples, evaluations)."""
    self._reset()

  def _reset(self):
    self._start = time.perf_counter()
    self._flops = 0.0
    self._compiled = False

  def step(self, video_shape) -> None:
    """Counts one step on a global batch of `video_shape`; a shape's first step compiled its program."""
    shape = tuple(video_shape)
    if shape not in self._per_shape:
      self._per_shape[shape] = flops.train_step_flops(self._config, shape)
      self._compiled = True
    self._flops += self._per_shape[shape]

  def window_scalars(self) -> dict:
    """{'tflops_per_device', 'mfu' (with a known peak)} for the window since the last call."""
    seconds = time.perf_counter() - self._start
    out = {}
    if not self._compiled and self._flops and seconds > 0:
      out["tflops_per_device"] = flops.tflops_per_device(self._flops, seconds, self._num_devices)
      utilisation = flops.mfu(self._flops, seconds, self._num_devices, self._peak)
      if utilisation is not None:
        out["mfu"] = utilisation
    self._reset()
    return out


def for_devices(config) -> Throughput:
  return Throughput(config, jax.device_count(), jax.devices()[0].device_kind,
                    config.train.peak_tflops_per_device)
