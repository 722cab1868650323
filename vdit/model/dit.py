"""The video diffusion transformer: spacetime patches, 3D RoPE, adaLN-zero, text cross-attention.

Block layout follows Wan 2.1 (shared time projection + per-block modulation table; self-attention,
un-gated cross-attention, MLP), so released weights can map onto it. Blocks are stacked and run
with `jax.lax.scan` (or a Python loop over the same stacked parameters), optionally
rematerialised. Video tokens may be sequence-sharded over the mesh's context axis; self-attention
then runs a context-parallel algorithm (vdit/model/context_parallel.py).
"""
import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from vdit.model import lora as lora_lib
from vdit.model import rope
from vdit.model.attention import ATTENTION_OUTPUT, Attention
from vdit.model.layers import MLP, Dense, LayerNorm, timestep_embedding
from vdit.model.patchify import grid_shape, patchify, unpatchify
from vdit.parallel.sharding import axis_size, constrain

# What a block's backward pass keeps from the forward (the rest is recomputed). "dots" keeps the
# outputs of matmuls against weights (not attention's batched ones); "dots_all" also keeps those;
# "dots_attention" keeps "dots" plus each attention's output (named ATTENTION_OUTPUT: a fused
# kernel is a custom call, which no dot policy matches); "offload_dots" keeps the same as "dots"
# in pinned host memory instead of device memory; "offload_carry" recomputes everything inside a block
# (as "full") and keeps each block's input, the one activation "full" stores per block, in pinned host
# memory: the stored activations leave the accelerator, at one device<->host copy per block each way.
BLOCK_INPUT = "block_input"  # checkpoint name of each scanned block's input
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_all": jax.checkpoint_policies.dots_saveable,
    "dots_attention": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        jax.checkpoint_policies.save_only_these_names(ATTENTION_OUTPUT)),
    "offload_dots": jax.checkpoint_policies.offload_dot_with_no_batch_dims(offload_src="device",
                                                                          offload_dst="pinned_host"),
    "offload_carry": jax.checkpoint_policies.save_and_offload_only_these_names(
        names_which_can_be_saved=(), names_which_can_be_offloaded=(BLOCK_INPUT,), offload_src="device",
        offload_dst="pinned_host"),
}


# model.variant -> DiT architecture arguments (see DiT).
VARIANTS = {
    "vdit": dict(qk_norm="per_head", time_activation="gelu_tanh"),
    # Wan pads the text with zero embeddings to its fixed length and cross-attends to all of them
    # (no mask): the padding's projected biases take part, so exact Wan outputs need the same.
    "wan": dict(qk_norm="across_heads", time_activation="silu", attend_text_padding=True),
}


def remat_error(remat: str) -> str | None:
  """Why remat policy `remat` cannot run here, or None if it can."""
  if remat not in REMAT_POLICIES:
    return f"model.remat={remat!r} is not a policy; choose one of {sorted(REMAT_POLICIES)}."
  if remat.startswith("offload_"):
    device = jax.devices()[0]
    if "pinned_host" not in {m.kind for m in device.addressable_memories()}:
      return (f"model.remat={remat!r} needs pinned host memory, which {device.platform!r} devices lack; "
              "use 'dots' or 'full'.")
  return None


def _modulate(x, shift, scale):
  return x * (1 + scale) + shift


def _by_frame(x, num_frames):
  """[B, N, D] tokens (t-major) -> [B, F, N/F, D], so per-frame modulation [B, F, 1, D] broadcasts."""
  return x.reshape(x.shape[0], num_frames, -1, x.shape[-1])


class Block(nnx.Module):
  """Self-attention (RoPE) -> cross-attention to text -> MLP, modulated by the timestep."""

  def __init__(self, dim, num_heads, mlp_dim, text_dim, *, rngs, dtype, param_dtype, attention="xla",
               context_parallel="none", qk_norm="per_head"):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    attn_kw = dict(backend=attention, context_parallel=context_parallel, qk_norm=qk_norm, **kw)
    self.norm1 = LayerNorm(dim, affine=False, **kw)
    self.self_attn = Attention(dim, num_heads, **attn_kw)
    self.norm_cross = LayerNorm(dim, affine=True, **kw)
    self.cross_attn = Attention(dim, num_heads, kv_dim=text_dim, **attn_kw)
    self.norm2 = LayerNorm(dim, affine=False, **kw)
    self.mlp = MLP(dim, mlp_dim, **kw)
    # adaLN-zero: shifts, scales and gates start at zero so every block starts as the identity.
    self.modulation = nnx.Param(jnp.zeros((6, dim), param_dtype), logical_axes=("modulation", "embed"))

  def __call__(self, x, time_mod, context, context_mask, angles):
    """time_mod [B, F, 6, D]: F = 1 (one time per video) or the temporal patch count."""
    frames = time_mod.shape[1]
    mod = (self.modulation[...][None, None] + time_mod).astype(jnp.float32)
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod, 6, axis=2)  # [B, F, 1, D]
    by_frame = lambda y: _by_frame(y, frames)
    h = _modulate(by_frame(self.norm1(x).astype(jnp.float32)), shift_a, scale_a).reshape(x.shape)
    attn = by_frame(self.self_attn(h.astype(x.dtype), angles=angles))
    x = x + (attn * gate_a).reshape(x.shape).astype(x.dtype)
    x = x + self.cross_attn(self.norm_cross(x), context, context_mask)
    h = _modulate(by_frame(self.norm2(x).astype(jnp.float32)), shift_m, scale_m).reshape(x.shape)
    x = x + (by_frame(self.mlp(h.astype(x.dtype))) * gate_m).reshape(x.shape).astype(x.dtype)
    return constrain(x, ("batch", "length", "act_embed"))


class DiT(nnx.Module):
  """Predicts the flow velocity of a noisy video x_t [B, T, H, W, C] at time t given text.

  Frame conditioning: t may be per frame [B, T], with clean conditioning frames at t=0 (their
  tokens are modulated as "already denoised"); with `frame_conditioning` the per-frame mask also
  enters as an extra input channel, so a conditioning frame that shares a temporal patch with
  noisy ones is still known to be clean.

  Runtime choices (parameters and checkpoints are the same for every value): `attention` (local
  kernel: xla | cudnn | splash), `context_parallel` (none | ulysses | ring), `remat` (a key of
  REMAT_POLICIES), `scan_layers` (True: lax.scan over the blocks, compile time independent of
  depth; False: a Python loop, which lets XLA schedule across blocks).
  """

  def __init__(self, *, in_channels, patch_size, dim, depth, num_heads, mlp_ratio, text_dim, rngs,
               freq_dim=256, rope_theta=10000.0, remat="none", frame_conditioning=False, attention="xla",
               context_parallel="none", scan_layers=True, qk_norm="per_head", time_activation="gelu_tanh",
               attend_text_padding=False, interval_conditioning=False, lora=None, dtype=jnp.float32,
               param_dtype=jnp.float32):
    error = remat_error(remat)
    if error:
      raise ValueError(error)
    self.patch_size = tuple(patch_size)
    self.in_channels = in_channels
    self.num_heads = num_heads
    self.head_dim = dim // num_heads
    self.freq_dim = freq_dim
    self.rope_theta = rope_theta
    self.remat = remat
    self.scan_layers = scan_layers
    self.context_parallel = context_parallel
    self.dtype = dtype
    self.frame_conditioning = frame_conditioning
    self.attend_text_padding = attend_text_padding
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    patch_volume = self.patch_size[0] * self.patch_size[1] * self.patch_size[2]
    patch_dim = in_channels * patch_volume
    in_dim = (in_channels + int(frame_conditioning)) * patch_volume
    self.patch_embed = Dense(in_dim, dim, in_axes=("patch",), out_axes=("embed",), rngs=rngs, **kw)
    self.text_embed = MLP(text_dim, dim, out_dim=dim, length_axis="text_length", rngs=rngs, **kw)
    self.time_embed = MLP(freq_dim, dim, out_dim=dim, activation=time_activation, rngs=rngs, **kw)
    self.time_project = Dense(dim, (6, dim), in_axes=("embed",), out_axes=("modulation", "mlp"), rngs=rngs, **kw)
    # A few-step student (vdit/training/distill_step.py) also sees the length h = t - r of the step
    # it takes, added to the time embedding; zero-initialised, so a student starts as its teacher.
    self.interval_embed = (MLP(freq_dim, dim, out_dim=dim, activation=time_activation, zero_init_out=True,
                               rngs=rngs, **kw) if interval_conditioning else None)

    def make_block(key):
      # Text is projected to `dim` by text_embed before the blocks see it.
      block = Block(dim, num_heads, int(dim * mlp_ratio), dim, rngs=nnx.Rngs(key), attention=attention,
                    context_parallel=context_parallel, qk_norm=qk_norm, **kw)
      if lora is not None:  # a lora.LoRASpec: adapters on the targeted layers (fine-tuning)
        lora_lib.attach(block, lora, nnx.Rngs(jax.random.fold_in(key, 1)), param_dtype)
      return block

    block_def = nnx.graphdef(nnx.eval_shape(lambda: make_block(jax.random.key(0))))
    stacked = jax.vmap(lambda key: nnx.state(make_block(key)))(jax.random.split(rngs.params(), depth))
    self.blocks = nnx.merge(block_def, stacked)
    self.norm_out = LayerNorm(dim, affine=False, **kw)
    self.head_modulation = nnx.Param(jnp.zeros((2, dim), param_dtype), logical_axes=("modulation", "embed"))
    self.head = Dense(dim, patch_dim, in_axes=("embed",), out_axes=("patch",), zero_init=True, rngs=rngs, **kw)

  def __call__(self, x, t, context, context_mask, frame_mask=None, interval=None):
    """x [B,T,H,W,C], t [B] or per frame [B,T] in [0,1], context [B,L,text_dim], context_mask bool
    [B,L], frame_mask bool [B,T] (conditioning frames; used with frame_conditioning), interval [B]
    (students: the step length h = t - r; 0, the default, is the instantaneous velocity) -> velocity."""
    grid = grid_shape(x.shape, self.patch_size)
    b, num_frames = x.shape[:2]
    if self.frame_conditioning:
      mask = jnp.zeros((b, num_frames), bool) if frame_mask is None else frame_mask
      mask = jnp.broadcast_to(mask[:, :, None, None, None], x.shape[:-1] + (1,)).astype(x.dtype)
      x = jnp.concatenate([x, mask], axis=-1)
    self._check_mesh(grid, x.shape[1:4])
    tokens = self.patch_embed(patchify(x, self.patch_size))
    tokens = constrain(tokens, ("batch", "length", "act_embed"))
    if self.attend_text_padding:  # padded positions hold zero embeddings (Generator.encode_text)
      context_mask = jnp.ones_like(context_mask)
    context = self.text_embed(context)
    # One time per video ([B, 1]) or per temporal patch ([B, nt]: the noisiest frame of the patch).
    t = t[:, None] if t.ndim == 1 else t.reshape(b, grid[0], -1).max(axis=-1)
    time_emb = self.time_embed(timestep_embedding(t.reshape(-1), self.freq_dim)).reshape(b, t.shape[1], -1)
    if self.interval_embed is not None:
      interval = jnp.zeros((b,), jnp.float32) if interval is None else interval
      time_emb = time_emb + self.interval_embed(timestep_embedding(interval, self.freq_dim))[:, None]
    time_mod = self.time_project(jax.nn.silu(time_emb))  # [B, F, 6, D]
    angles = rope.video_angles(grid, self.head_dim, self.rope_theta)
    # Loop invariants of the scan below get explicit shardings: left to propagation, XLA picked
    # layouts whose backward accumulation was wrong on a data x fsdp x tensor mesh (found by
    # tests/test_sharding.py against a float64 single-device reference).
    context = constrain(context, ("batch", "text_length", "act_embed"))
    context_mask = constrain(context_mask, ("batch", "text_length"))
    time_mod = constrain(time_mod, ("batch", None, None, "act_embed"))

    block_def, block_state = nnx.split(self.blocks)

    def body(h, state):
      h = checkpoint_name(h, BLOCK_INPUT)
      return nnx.merge(block_def, state)(h, time_mod, context, context_mask, angles), None

    if self.remat != "none":
      body = jax.checkpoint(body, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
    if self.scan_layers:
      tokens, _ = jax.lax.scan(body, tokens, block_state)
    else:
      # Layer i's slice of the same stacked parameters: checkpoints do not depend on this choice.
      for i in range(jax.tree.leaves(block_state)[0].shape[0]):
        tokens, _ = body(tokens, jax.tree.map(lambda p: p[i], block_state))

    head_mod = self.head_modulation[...][None, None] + time_emb[:, :, None]  # [B, F, 2, D]
    shift, scale = jnp.split(head_mod.astype(jnp.float32), 2, axis=2)
    h = _modulate(_by_frame(self.norm_out(tokens).astype(jnp.float32), t.shape[1]), shift, scale)
    out = self.head(h.reshape(tokens.shape).astype(self.dtype))
    return unpatchify(out, grid, self.patch_size, self.in_channels).astype(jnp.float32)

  def _check_mesh(self, grid, video_size):
    """Heads split evenly over the tensor axis; context-parallel attention splits the token
    sequence evenly over the context axis. Checked while tracing, before any compute."""
    tensor, context = axis_size("tensor"), axis_size("context")
    if self.num_heads % tensor:
      raise ValueError(f"model.num_heads={self.num_heads} is not divisible by the mesh's tensor axis ({tensor}); "
                       "choose num_heads a multiple of it, or a smaller mesh.tensor.")
    tokens = grid[0] * grid[1] * grid[2]
    if self.context_parallel != "none" and tokens % context:
      raise ValueError(
          f"A {'x'.join(map(str, video_size))} video has {tokens} tokens (grid {grid}, patch {self.patch_size}), "
          f"not divisible by the mesh's context axis ({context}) that model.context_parallel="
          f"{self.context_parallel!r} splits them over; use frames/height/width whose token count is a "
          f"multiple of {context}, or a smaller mesh.context.")
