"""Wan 2.1's transformer as vdit's DiT (model.variant='wan'): the config builds and runs, the
converter (`vdit.convert --from=wan2.1`) maps diffusers-layout weights or raises one WeightsError
naming the tensor, and parity with diffusers' WanTransformer3DModel (test-only extras torch +
diffusers; skipped without them).

Tiny Wan: 2 heads of 12 channels (RoPE split t/h/w = 4/4/4), FFN 32, 2 blocks, 4 latent channels,
text width 16, 1x2x2 patches. Parity tolerance: max |vdit - diffusers| <= 1e-4 * max |diffusers|
(float32 on CPU).
"""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tiny import tiny_config
from vdit.config import config_io
from vdit.interop.wan import dit_weights as convert
from vdit.core import weights
from vdit.model import factory

_WAN = dict(_class_name="WanTransformer3DModel", patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=12,
            in_channels=4, out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None,
            rope_max_seq_len=1024, pos_embed_seq_len=None)
_REL_TOL = 1e-4


def _wan_shapes(cfg):
  """diffusers WanTransformer3DModel tensor names -> shapes, without torch."""
  d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
  c, f, p = cfg["in_channels"], cfg["ffn_dim"], cfg["patch_size"]
  shapes = {"patch_embedding.weight": (d, c, *p), "patch_embedding.bias": (d,), "scale_shift_table": (1, 2, d),
            "proj_out.weight": (c * int(np.prod(p)), d), "proj_out.bias": (c * int(np.prod(p)),)}
  for name, (i, o) in {"text_embedder.linear_1": (cfg["text_dim"], d), "text_embedder.linear_2": (d, d),
                       "time_embedder.linear_1": (cfg["freq_dim"], d), "time_embedder.linear_2": (d, d),
                       "time_proj": (d, 6 * d)}.items():
    shapes.update({f"condition_embedder.{name}.weight": (o, i), f"condition_embedder.{name}.bias": (o,)})
  for b in range(cfg["num_layers"]):
    block = {"norm2.weight": (d,), "norm2.bias": (d,), "scale_shift_table": (1, 6, d),
             "ffn.net.0.proj.weight": (f, d), "ffn.net.0.proj.bias": (f,), "ffn.net.2.weight": (d, f),
             "ffn.net.2.bias": (d,)}
    for attn in ("attn1", "attn2"):
      for proj in ("to_q", "to_k", "to_v", "to_out.0"):
        block.update({f"{attn}.{proj}.weight": (d, d), f"{attn}.{proj}.bias": (d,)})
      block.update({f"{attn}.norm_q.weight": (d,), f"{attn}.norm_k.weight": (d,)})
    shapes.update({f"blocks.{b}.{k}": v for k, v in block.items()})
  return shapes


def _random_wan(cfg, seed=0):
  rng = np.random.default_rng(seed)
  return {k: (rng.standard_normal(s) / np.sqrt(s[-1] if len(s) > 1 else 4)).astype(np.float32)
          for k, s in _wan_shapes(cfg).items()}


def _write(tmp_path, tensors, cfg=_WAN):
  weights.save(str(tmp_path / "diffusion_pytorch_model.safetensors"), tensors)
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  return str(tmp_path)


def _inputs(seed=0, batch=2, frames=2, height=4, width=6, text_len=5):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, _WAN["in_channels"], frames, height, width)).astype(np.float32)  # Wan: BCTHW
  t = rng.uniform(0.05, 0.95, (batch,)).astype(np.float32)
  context = rng.standard_normal((batch, text_len, _WAN["text_dim"])).astype(np.float32)
  return x, t, context


def _vdit_forward(dit, x, t, context):
  """x [B, C, T, H, W] (Wan's layout) -> velocity in the same layout; no text padding."""
  mask = jnp.ones(context.shape[:2], bool)
  out = nnx.jit(lambda m, *a: m(*a))(dit, jnp.asarray(x.transpose(0, 2, 3, 4, 1)), jnp.asarray(t),
                                     jnp.asarray(context), mask)
  return np.asarray(out).transpose(0, 4, 1, 2, 3)


def test_wan_variant_config_builds_and_runs_and_keeps_old_signatures():
  base = tiny_config()
  config = tiny_config(**{"model.variant": "wan", "model.patch_size": (1, 2, 2)})
  config_io.validate(config)
  assert "model.variant" not in config_io.model_signature(base)
  assert config_io.model_signature(config)["model.variant"] == "wan"
  model = factory.build_model(config, nnx.Rngs(0))
  assert model.dit.blocks.self_attn.norm_q.scale.shape == (config.model.depth, 2, 16)  # across heads
  x = jnp.ones((1, 2, 4, 4, config.model.in_channels))
  out = model.dit(x, jnp.array([0.5]), jnp.ones((1, 3, config.text.dim)), jnp.ones((1, 3), bool))
  assert out.shape == x.shape and bool(jnp.isfinite(out).all())
  with pytest.raises(config_io.ConfigError, match="model.variant='wen'"):
    config_io.validate(tiny_config(**{"model.variant": "wen"}))


def test_convert_writes_a_file_that_loads_and_runs(tmp_path):
  (tmp_path / "in").mkdir()
  src = _write(tmp_path / "in", _random_wan(_WAN))
  out = str(tmp_path / "dit.safetensors")
  overrides = convert.convert("wan2.1", src, None, out)
  assert overrides["model.dim"] == 24 and overrides["text.dim"] == 16 and overrides["model.variant"] == "wan"
  dit = convert.load_dit(out)
  x, t, context = _inputs()
  y = _vdit_forward(dit, x, t, context)
  assert y.shape == x.shape and np.isfinite(y).all()


def test_wan_attends_to_zero_padded_text_like_the_release(tmp_path):
  """Wan pads prompts with zero embeddings to a fixed length and cross-attends to every position:
  the mask must not change the output, while the padding's length does."""
  (tmp_path / "in").mkdir()
  convert.convert("wan2.1", _write(tmp_path / "in", _random_wan(_WAN)), None, str(tmp_path / "dit.safetensors"))
  dit = convert.load_dit(str(tmp_path / "dit.safetensors"))
  x, t, context = _inputs()
  padded = np.concatenate([context, np.zeros_like(context)], axis=1)
  run = nnx.jit(lambda m, *a: m(*a))
  args = (jnp.asarray(x.transpose(0, 2, 3, 4, 1)), jnp.asarray(t), jnp.asarray(padded))
  half = jnp.arange(padded.shape[1])[None].repeat(2, 0) < context.shape[1]
  np.testing.assert_array_equal(run(dit, *args, half), run(dit, *args, jnp.ones_like(half)))
  unpadded = _vdit_forward(dit, x, t, context).transpose(0, 2, 3, 4, 1)
  assert np.abs(np.asarray(run(dit, *args, half)) - unpadded).max() > 1e-4


@pytest.mark.parametrize("damage, match", [
    ("missing", r"missing tensors \['blocks.1.attn2.norm_k.weight'\]"),
    ("shape", r"tensor 'blocks.0.ffn.net.0.proj.weight' has shape \(33, 24\)"),
])
def test_convert_errors_name_the_tensor(tmp_path, damage, match):
  tensors = _random_wan(_WAN)
  if damage == "missing":
    del tensors["blocks.1.attn2.norm_k.weight"]
  else:
    tensors["blocks.0.ffn.net.0.proj.weight"] = np.zeros((33, 24), np.float32)
  src = _write(tmp_path, tensors)
  with pytest.raises(weights.WeightsError, match=match) as e:
    convert.convert("wan2.1", src, None, str(tmp_path / "out.safetensors"))
  assert repr(src) in str(e.value)


def test_converted_file_is_checked_against_the_model(tmp_path):
  out = str(tmp_path / "dit.safetensors")
  convert.convert("wan2.1", _write(tmp_path, _random_wan(_WAN)), None, out)
  dit = convert.build_dit(dict(convert.model_overrides(_WAN), **{"model.depth": 3}), abstract=True)
  tensors, _ = weights.load(out)
  with pytest.raises(weights.WeightsError, match=r"tensor 'blocks\..*' has shape \(2,"):
    weights.load_into(dit, tensors, out)


def test_unsupported_wan_config_is_one_clear_error():
  with pytest.raises(ValueError, match=r"image_dim=1280 is not supported"):
    convert.model_overrides(dict(_WAN, image_dim=1280), "config.json")


def random_wan_pair(torch, model_class, tmp_path):
  """(diffusers model with every weight random, norms and modulation tables included; the same
  weights saved by diffusers and converted into vdit's DiT)."""
  torch.manual_seed(0)
  cfg = {k: v for k, v in _WAN.items() if not k.startswith("_")}
  ref = model_class(**dict(cfg, patch_size=tuple(cfg["patch_size"]))).eval()
  with torch.no_grad():
    for name, p in ref.named_parameters():
      p.copy_(torch.randn_like(p) * (1.0 if p.ndim < 2 or "scale_shift" in name else p.shape[1] ** -0.5))
      if "norm" in name and name.endswith("weight"):
        p.add_(1.0)
  ref.save_pretrained(str(tmp_path / "wan"), safe_serialization=True)
  out = str(tmp_path / "dit.safetensors")
  convert.convert("wan2.1", str(tmp_path / "wan"), str(tmp_path / "wan" / "config.json"), out)
  return ref, convert.load_dit(out)


@pytest.mark.reference
def test_parity_with_diffusers(tmp_path):
  torch = pytest.importorskip("torch", reason="parity needs the test-only extra torch (CPU)")
  transformer_wan = pytest.importorskip("diffusers.models.transformers.transformer_wan",
                                        reason="parity needs the test-only extra diffusers")
  ref, dit = random_wan_pair(torch, transformer_wan.WanTransformer3DModel, tmp_path)
  x, t, context = _inputs(frames=3)
  with torch.no_grad():
    want = ref(torch.from_numpy(x), torch.from_numpy(t * 1000), torch.from_numpy(context),
               return_dict=False)[0].numpy()
  got = _vdit_forward(dit, x, t, context)
  scale = np.abs(want).max()
  err = np.abs(got - want).max()
  print(f"Wan DiT parity: max abs error {err:.3g}, output scale {scale:.3g}, relative {err / scale:.3g}")
  assert err <= _REL_TOL * scale
