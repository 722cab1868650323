"""Wan 2.1's causal 3D VAE: shapes, causal chunking, weight-file errors, and parity with diffusers.

The network is tiny (base_dim 8, dim_mult (1, 2, 2, 2) or (1, 1, 1, 1): still temporal x4, spatial x8) and its
weights are random numpy arrays loaded into an abstract model (eager random init is slow). Each
jitted chunk shape compiles once (~2 s on CPU) and the tests reuse those shapes. The parity tests
need torch and diffusers (test-only extras) and are skipped without them.
"""
import json

import jax
import numpy as np
import pytest

from tests import helpers
from vdit.core import weights
from vdit.interop.wan import vae_weights as convert_wan_vae
from vdit.vae import wan_vae

_TINY = dict(base_dim=8, z_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1, attn_scales=(),
             temperal_downsample=(False, True, True), latents_mean=(0.1, -0.2, 0.3, 0.0),
             latents_std=(1.5, 0.5, 2.0, 1.0))
# The tests without torch use a cheaper variant (constant width: ~40% less compile time).
_SMALL = dict(_TINY, dim_mult=(1, 1, 1, 1))
# Parity tolerance: max |vdit - diffusers| <= 1e-4 * max |diffusers| (float32 on CPU).
_REL_TOL = 1e-4


def _random_tensors(config, seed=0):
  """vdit-layout tensors: fan-in scaled kernels, norm scales near 1, small biases."""
  rng = np.random.default_rng(seed)
  tensors = {}
  for name, shape in wan_vae.tensor_shapes(config).items():
    if name.endswith("kernel"):
      value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
    elif name.endswith("scale"):
      value = 1.0 + 0.2 * rng.standard_normal(shape)
    else:
      value = 0.1 * rng.standard_normal(shape)
    tensors[name] = value.astype(np.float32)
  return tensors


def _save(path, config, tensors):
  weights.save(str(path), tensors, {"format": wan_vae.FORMAT, "config": config.to_json()})
  return str(path)


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
  config = wan_vae.WanVAEConfig(**_SMALL)
  return wan_vae.load(_save(tmp_path_factory.mktemp("vae") / "tiny.safetensors", config, _random_tensors(config)))


def _video(t, size=16, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (1, t, size, size, 3)).astype(np.float32)


def test_encode_decode_shapes(tiny_vae):
  mean, logvar = wan_vae.encode(tiny_vae, _video(9))
  assert mean.shape == logvar.shape == (1, 3, 2, 2, 4)
  z = wan_vae.sample(mean, logvar, jax.random.key(0))
  assert z.shape == mean.shape and not np.allclose(z, mean)
  np.testing.assert_allclose(wan_vae.denormalize_latents(tiny_vae.config, wan_vae.normalize_latents(tiny_vae.config, z)),
                             z, rtol=1e-5, atol=1e-6)
  video = wan_vae.decode(tiny_vae, z)
  assert video.shape == (1, 9, 16, 16, 3)
  assert float(np.abs(video).max()) <= 1.0 and np.all(np.isfinite(video))


def test_encode_in_one_call_equals_chunks_and_is_causal(tiny_vae):
  video = _video(9)
  chunked = np.asarray(wan_vae.encode(tiny_vae, video)[0])  # frame 0, then 4 + 4 frames
  whole = np.asarray(wan_vae.encode(tiny_vae, video, chunk_frames=None)[0])
  np.testing.assert_allclose(whole, chunked, atol=1e-5 * np.abs(chunked).max())
  # Appending frames does not change the latents of the earlier ones.
  prefix = np.asarray(wan_vae.encode(tiny_vae, video[:, :5])[0])
  np.testing.assert_allclose(chunked[:, :2], prefix, atol=1e-6 * np.abs(prefix).max())
  assert not np.allclose(chunked[:, 2], 0.0)


def test_decode_is_causal(tiny_vae):
  z = np.random.default_rng(1).standard_normal((1, 3, 2, 2, 4)).astype(np.float32)
  full = np.asarray(wan_vae.decode(tiny_vae, z, clip=False))
  prefix = np.asarray(wan_vae.decode(tiny_vae, z[:, :2], clip=False))
  assert full.shape == (1, 9, 16, 16, 3) and prefix.shape == (1, 5, 16, 16, 3)
  np.testing.assert_allclose(full[:, :5], prefix, atol=1e-6 * np.abs(full).max())


def test_bad_video_shape_is_a_clear_error(tiny_vae):
  with pytest.raises(ValueError, match=r"expected \[B, 1 \+ 4k, H, W, 3\]"):
    wan_vae.encode(tiny_vae, _video(8))


def test_wrong_shape_weight_file_names_file_and_tensor(tmp_path):
  config = wan_vae.WanVAEConfig(**_TINY)
  tensors = _random_tensors(config)
  tensors["decoder.conv_in.kernel"] = tensors["decoder.conv_in.kernel"][..., :-1]
  path = _save(tmp_path / "bad.safetensors", config, tensors)
  with pytest.raises(weights.WeightsError, match=r"bad\.safetensors.*'decoder\.conv_in\.kernel' has shape "
                     r"\(3, 3, 3, 4, 15\).*expects \(3, 3, 3, 4, 16\)"):
    wan_vae.load(path)


def test_converter_lists_unknown_missing_and_mismatched_names():
  config = wan_vae.WanVAEConfig(**_TINY)
  tensors = {"encoder.conv_in.weight": np.zeros((8, 3, 3, 3, 2), np.float32),  # kernel T=2, not 3
             "encoder.downsamples.0.residual.0.gamma": np.ones((8, 1, 1, 1), np.float32)}
  with pytest.raises(weights.WeightsError) as e:
    convert_wan_vae.convert_state_dict(tensors, config, "Weights file 'x.safetensors'")
  message = str(e.value)
  assert "Weights file 'x.safetensors'" in message and "encoder.downsamples.0.residual.0.gamma" in message
  assert "encoder.conv_in.weight (8, 3, 3, 3, 2) -> encoder.conv_in.kernel (3, 3, 2, 3, 8), expected (3, 3, 3, 3, 8)" in message
  assert "missing (vdit names) ['decoder.conv_in.bias'" in message and "original Wan repository" in message


def test_config_rejects_wan22_and_unknown_keys():
  with pytest.raises(ValueError, match="is_residual=True"):
    convert_wan_vae.config_from_diffusers({"is_residual": True})
  with pytest.raises(ValueError, match=r"unknown AutoencoderKLWan config keys \['z_dims'\]"):
    convert_wan_vae.config_from_diffusers({"z_dims": 4})


# ---------------------------------------------------------------- parity with diffusers (torch)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """A tiny random diffusers AutoencoderKLWan, saved as safetensors + config.json and converted by the CLI."""
  torch = pytest.importorskip("torch", reason="parity needs torch (test-only extra: pip install torch diffusers)")
  diffusers = pytest.importorskip("diffusers", reason="parity needs diffusers (test-only extra: pip install diffusers)")
  torch.manual_seed(0)
  kw = {k: list(v) if isinstance(v, tuple) else v for k, v in _TINY.items()}
  ref = diffusers.AutoencoderKLWan(**kw).eval()
  with torch.no_grad():  # non-trivial norm scales and biases (diffusers initialises gamma to 1)
    for name, p in ref.named_parameters():
      if name.endswith("gamma"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
  directory = tmp_path_factory.mktemp("diffusers_vae")
  ref.save_config(str(directory))
  weights.save(str(directory / "diffusion_pytorch_model.safetensors"),
               {k: v.detach().numpy() for k, v in ref.state_dict().items()})
  out = directory / "vae.safetensors"
  run = helpers.cli("vdit.interop.wan.vae_weights", f"--input={directory / 'diffusion_pytorch_model.safetensors'}",
                    f"--config={directory / 'config.json'}", f"--output={out}")
  assert run.returncode == 0, run.stderr[-2000:]
  return torch, ref, wan_vae.load(str(out))


def _rel_err(ours, ref_nchw):
  ref = ref_nchw.detach().numpy().transpose(0, 2, 3, 4, 1)
  return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


@pytest.mark.reference
def test_diffusers_config_roundtrip(reference):
  _, ref, vae = reference
  assert vae.config == wan_vae.WanVAEConfig(**_TINY)
  assert json.loads(vae.config.to_json())["z_dim"] == ref.config.z_dim


@pytest.mark.reference
def test_encode_matches_diffusers(reference):
  torch, ref, vae = reference
  video = _video(5, seed=3)
  with torch.no_grad():
    dist = ref.encode(torch.from_numpy(video.transpose(0, 4, 1, 2, 3))).latent_dist
  mean, logvar = wan_vae.encode(vae, video)
  assert _rel_err(mean, dist.mean) <= _REL_TOL
  assert _rel_err(logvar, dist.logvar) <= _REL_TOL


def _diffusers_decode_unclipped(torch, ref, z):
  """diffusers' AutoencoderKLWan._decode without its final clamp (so the comparison is not saturated)."""
  with torch.no_grad():
    ref.clear_cache()
    x = ref.post_quant_conv(z)
    outs = []
    for i in range(z.shape[2]):
      ref._conv_idx = [0]  # pylint: disable=protected-access
      outs.append(ref.decoder(x[:, :, i:i + 1], feat_cache=ref._feat_map, feat_idx=ref._conv_idx,  # pylint: disable=protected-access
                              first_chunk=i == 0))
    ref.clear_cache()
    return torch.cat(outs, 2)


@pytest.mark.reference
def test_decode_matches_diffusers(reference):
  torch, ref, vae = reference
  z = np.random.default_rng(4).standard_normal((1, 2, 2, 2, 4)).astype(np.float32)
  z_torch = torch.from_numpy(z.transpose(0, 4, 1, 2, 3))
  assert _rel_err(wan_vae.decode(vae, z, clip=False), _diffusers_decode_unclipped(torch, ref, z_torch)) <= _REL_TOL
  with torch.no_grad():
    clipped = ref.decode(z_torch).sample
  assert _rel_err(wan_vae.decode(vae, z), clipped) <= _REL_TOL


# ------------------------------------------------------------------------------- spatial tiling
# Tiles of 16 px on a 24 px frame (overlap 8 px) are 2x2 latents at offsets 0 and 1: the shapes the
# tests above compiled. Tiled differs from untiled by design (zero padding at tile edges, per-tile
# mid-block attention): with these random tiny VAEs and tiles this small the difference is of the
# order of the output itself, so the tests check the tiling arithmetic exactly instead.


def test_tile_as_large_as_the_frame_is_untiled(tiny_vae):
  video = _video(9)
  untiled = np.asarray(wan_vae.encode(tiny_vae, video)[0])
  for tile, overlap in ((16, None), ((64, 32), 8)):
    np.testing.assert_array_equal(wan_vae.encode(tiny_vae, video, tile=tile, tile_overlap=overlap)[0], untiled)
  z = np.random.default_rng(1).standard_normal((1, 3, 2, 2, 4)).astype(np.float32)
  np.testing.assert_array_equal(wan_vae.decode(tiny_vae, z, tile=(16, 24)), wan_vae.decode(tiny_vae, z))


def _tile_weights(size, spans, overlap):
  """[tiles, size]: 1 on a tile, fading linearly (i / overlap) into the overlap it shares with the next."""
  w = np.zeros((len(spans), size))
  for k, (a, b) in enumerate(spans):
    w[k, a:b] = 1.0
    if k:
      w[k, a:a + overlap] = np.arange(overlap) / overlap
      w[k - 1, a:a + overlap] = 1.0 - np.arange(overlap) / overlap
  return w


def _blended(tile_fn, spans, out_spans, overlap):
  """The tiles' outputs summed with separable (bilinear at corners) weights over the (square) frame."""
  wt = _tile_weights(out_spans[-1][1], out_spans, overlap)
  assert np.allclose(wt.sum(0), 1.0)
  total = 0.0
  for i, ((ha, hb), (oa, ob)) in enumerate(zip(spans, out_spans)):
    for j, ((wa, wb), (pa, pb)) in enumerate(zip(spans, out_spans)):
      out = np.asarray(tile_fn(slice(ha, hb), slice(wa, wb)))
      placed = np.zeros(out.shape[:2] + (out_spans[-1][1],) * 2 + out.shape[-1:], out.dtype)
      placed[:, :, oa:ob, pa:pb] = out
      total = total + placed * (wt[i][:, None] * wt[j][None, :])[None, None, :, :, None]
  return total


def test_tiles_are_placed_and_blended_linearly(tiny_vae):
  z = np.random.default_rng(2).standard_normal((1, 3, 3, 3, 4)).astype(np.float32)
  tiled = np.asarray(wan_vae.decode(tiny_vae, z, clip=False, tile=16, tile_overlap=8))
  spans = [(0, 2), (1, 3)]  # latent tiles of 16 px, every 8 px; blended over 8 pixels
  want = _blended(lambda h, w: wan_vae.decode(tiny_vae, z[:, :, h, w], clip=False), spans, [(0, 16), (8, 24)], 8)
  np.testing.assert_allclose(tiled, want, atol=1e-6 * np.abs(want).max())
  video = _video(9, size=24)  # encoding blends in latent space: over 1 latent, i.e. no fade
  tiled = np.asarray(wan_vae.encode(tiny_vae, video, tile=16, tile_overlap=8)[0])
  want = _blended(lambda h, w: wan_vae.encode(tiny_vae, video[:, :, 8 * h.start:8 * h.stop, 8 * w.start:8 * w.stop])[0],
                  spans, spans, 1)
  np.testing.assert_allclose(tiled, want, atol=1e-6 * np.abs(want).max())


def test_tiled_encode_runs_each_tile_through_the_temporal_chunks(tiny_vae):
  video = _video(9, size=24, seed=5)
  chunked = np.asarray(wan_vae.encode(tiny_vae, video, tile=16, tile_overlap=8)[0])  # frame 0, 4 + 4 frames
  whole = np.asarray(wan_vae.encode(tiny_vae, video, chunk_frames=None, tile=16, tile_overlap=8)[0])
  assert chunked.shape == (1, 3, 3, 3, 4)
  np.testing.assert_allclose(whole, chunked, atol=1e-5 * np.abs(chunked).max())


def test_bad_tiles_are_clear_errors(tiny_vae):
  video, z = _video(1), np.zeros((1, 1, 2, 2, 4), np.float32)
  with pytest.raises(ValueError, match=r"tile=\(12, 16\) must be \(height, width\) in pixels, positive multiples of 8"):
    wan_vae.encode(tiny_vae, video, tile=(12, 16))
  with pytest.raises(ValueError, match=r"tile=\(0, 0\) must be"):
    wan_vae.decode(tiny_vae, z, tile=0)
  with pytest.raises(ValueError, match=r"tile=\(16,\) must be"):
    wan_vae.encode(tiny_vae, video, tile=(16,))
  with pytest.raises(ValueError, match=r"tile_overlap=\(4, 4\) must be .* multiples of 8 from 0 to half the tile"):
    wan_vae.encode(tiny_vae, video, tile=16, tile_overlap=4)
  with pytest.raises(ValueError, match=r"tile_overlap=\(16, 8\) must be .* half the tile \(16, 16\)"):
    wan_vae.decode(tiny_vae, z, tile=16, tile_overlap=(16, 8))
  with pytest.raises(ValueError, match=r"tile_overlap=8 needs a tile size"):
    wan_vae.decode(tiny_vae, z, tile_overlap=8)


@pytest.mark.reference
def test_tiled_encode_decode_match_diffusers(reference):
  """Height split in tiles where diffusers' tiling and ours coincide (vdit.vae.tiling): 32 px in
  tiles of 24 every 16 px, faded over 8 px when decoding (1 latent, no fade, when encoding)."""
  torch, ref, vae = reference
  ref.enable_tiling(tile_sample_min_height=24, tile_sample_min_width=16, tile_sample_stride_height=16,
                    tile_sample_stride_width=16)
  try:
    video = np.random.default_rng(6).uniform(-1, 1, (1, 5, 32, 16, 3)).astype(np.float32)
    z = np.random.default_rng(7).standard_normal((1, 2, 4, 2, 4)).astype(np.float32)
    with torch.no_grad():
      dist = ref.encode(torch.from_numpy(video.transpose(0, 4, 1, 2, 3))).latent_dist
      decoded = ref.decode(torch.from_numpy(z.transpose(0, 4, 1, 2, 3))).sample
  finally:
    ref.disable_tiling()
  mean, logvar = wan_vae.encode(vae, video, tile=(24, 16), tile_overlap=(8, 0))
  assert _rel_err(mean, dist.mean) <= _REL_TOL and _rel_err(logvar, dist.logvar) <= _REL_TOL
  # diffusers clamps its tiled output; few of these pixels saturate, so the comparison still bites.
  assert _rel_err(wan_vae.decode(vae, z, tile=(24, 16), tile_overlap=(8, 0)), decoded) <= _REL_TOL
