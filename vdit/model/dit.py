"""The video diffusion transformer: spacetime patches, 3D RoPE, adaLN-zero, text cross-attention.

Block layout follows Wan 2.1 (shared time projection + per-block modulation table; self-attention,
un-gated cross-attention, MLP), so released weights can map onto it. Blocks are stacked and run
with `jax.lax.scan`, optionally rematerialised, so compile time does not grow with depth.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from vdit.model import rope
from vdit.model.attention import Attention
from vdit.model.layers import MLP, Dense, LayerNorm, timestep_embedding
from vdit.model.patchify import grid_shape, patchify, unpatchify
from vdit.sharding import constrain

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _modulate(x, shift, scale):
  return x * (1 + scale) + shift


class Block(nnx.Module):
  """Self-attention (RoPE) -> cross-attention to text -> MLP, modulated by the timestep."""

  def __init__(self, dim, num_heads, mlp_dim, text_dim, *, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.norm1 = LayerNorm(dim, affine=False, **kw)
    self.self_attn = Attention(dim, num_heads, **kw)
    self.norm_cross = LayerNorm(dim, affine=True, **kw)
    self.cross_attn = Attention(dim, num_heads, kv_dim=text_dim, **kw)
    self.norm2 = LayerNorm(dim, affine=False, **kw)
    self.mlp = MLP(dim, mlp_dim, **kw)
    # adaLN-zero: shifts, scales and gates start at zero so every block starts as the identity.
    self.modulation = nnx.Param(jnp.zeros((6, dim), param_dtype), logical_axes=("modulation", "embed"))

  def __call__(self, x, time_mod, context, context_mask, angles):
    mod = (self.modulation[...][None] + time_mod).astype(jnp.float32)  # [B, 6, D]
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod, 6, axis=1)  # each [B, 1, D]
    h = _modulate(self.norm1(x).astype(jnp.float32), shift_a, scale_a)
    x = x + (self.self_attn(h.astype(x.dtype), angles=angles) * gate_a).astype(x.dtype)
    x = x + self.cross_attn(self.norm_cross(x), context, context_mask)
    h = _modulate(self.norm2(x).astype(jnp.float32), shift_m, scale_m)
    x = x + (self.mlp(h.astype(x.dtype)) * gate_m).astype(x.dtype)
    return constrain(x, ("batch", "length", "act_embed"))


class DiT(nnx.Module):
  """Predicts the flow velocity of a noisy video x_t [B, T, H, W, C] at time t [B] given text."""

  def __init__(self, *, in_channels, patch_size, dim, depth, num_heads, mlp_ratio, text_dim, rngs,
               freq_dim=256, rope_theta=10000.0, remat="none", dtype=jnp.float32, param_dtype=jnp.float32):
    if remat not in REMAT_POLICIES:
      raise ValueError(f"Unknown remat policy {remat!r}; choose one of {sorted(REMAT_POLICIES)}.")
    self.patch_size = tuple(patch_size)
    self.in_channels = in_channels
    self.num_heads = num_heads
    self.head_dim = dim // num_heads
    self.freq_dim = freq_dim
    self.rope_theta = rope_theta
    self.remat = remat
    self.dtype = dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    patch_dim = in_channels
    for p in self.patch_size:
      patch_dim *= p
    self.patch_embed = Dense(patch_dim, dim, in_axes=("patch",), out_axes=("embed",), rngs=rngs, **kw)
    self.text_embed = MLP(text_dim, dim, out_dim=dim, rngs=rngs, **kw)
    self.time_embed = MLP(freq_dim, dim, out_dim=dim, rngs=rngs, **kw)
    self.time_project = Dense(dim, (6, dim), in_axes=("embed",), out_axes=("modulation", "mlp"), rngs=rngs, **kw)

    def make_block(key):
      # Text is projected to `dim` by text_embed before the blocks see it.
      return Block(dim, num_heads, int(dim * mlp_ratio), dim, rngs=nnx.Rngs(key), **kw)

    block_def = nnx.graphdef(nnx.eval_shape(lambda: make_block(jax.random.key(0))))
    stacked = jax.vmap(lambda key: nnx.state(make_block(key)))(jax.random.split(rngs.params(), depth))
    self.blocks = nnx.merge(block_def, stacked)
    self.norm_out = LayerNorm(dim, affine=False, **kw)
    self.head_modulation = nnx.Param(jnp.zeros((2, dim), param_dtype), logical_axes=("modulation", "embed"))
    self.head = Dense(dim, patch_dim, in_axes=("embed",), out_axes=("patch",), zero_init=True, rngs=rngs, **kw)

  def __call__(self, x, t, context, context_mask):
    """x [B,T,H,W,C], t [B] in [0,1], context [B,L,text_dim], context_mask bool [B,L] -> velocity like x."""
    grid = grid_shape(x.shape, self.patch_size)
    tokens = self.patch_embed(patchify(x, self.patch_size))
    tokens = constrain(tokens, ("batch", "length", "act_embed"))
    context = self.text_embed(context)
    time_emb = self.time_embed(timestep_embedding(t, self.freq_dim))
    time_mod = self.time_project(jax.nn.silu(time_emb))  # [B, 6, D]
    angles = rope.video_angles(grid, self.head_dim, self.rope_theta)
    # Loop invariants of the scan below get explicit shardings: left to propagation, XLA picked
    # layouts whose backward accumulation was wrong on a data x fsdp x tensor mesh (found by
    # tests/test_sharding.py against a float64 single-device reference).
    context = constrain(context, ("batch", "length", "act_embed"))
    context_mask = constrain(context_mask, ("batch", "length"))
    time_mod = constrain(time_mod, ("batch", None, "act_embed"))

    block_def, block_state = nnx.split(self.blocks)

    def body(h, state):
      return nnx.merge(block_def, state)(h, time_mod, context, context_mask, angles), None

    policy = REMAT_POLICIES[self.remat]
    if self.remat != "none":
      body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    tokens, _ = jax.lax.scan(body, tokens, block_state)

    shift, scale = jnp.split((self.head_modulation[...][None] + time_emb[:, None]).astype(jnp.float32), 2, axis=1)
    h = _modulate(self.norm_out(tokens).astype(jnp.float32), shift, scale)
    out = self.head(h.astype(self.dtype))
    return unpatchify(out, grid, self.patch_size, self.in_channels).astype(jnp.float32)
