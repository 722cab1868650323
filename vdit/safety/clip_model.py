"""CLIP (OpenAI's; transformers' `CLIPModel`) in Flax NNX: a vision transformer over image patches and
a causal text transformer, each projected into one space where the cosine of an image's and a
text's embeddings says how well they match. The `clip` frame classifier (vdit.safety.clip_frames)
scores frames with it; its files are read by vdit.safety.clip_weights.

Modules and parameters carry transformers' names (`vision_model.encoder.layers.0.self_attn.q_proj`),
so a weight file maps by renaming the leaf and transposing. CLIP lives here rather than in
vdit.model because safety sits below model in the layers; it needs no sharding or fused attention.
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI's checkpoints
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # LAION's
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class TowerConfig:
  """One transformer stack (text or vision)."""
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  layer_norm_eps: float = 1e-5
  hidden_act: str = "quick_gelu"


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  text: TowerConfig
  vision: TowerConfig
  projection_dim: int
  vocab_size: int
  max_positions: int  # text tokens, start and end included
  eos_token_id: int  # 2 means transformers' legacy rule: pool at the highest token id
  image_size: int
  patch_size: int


class Attention(nnx.Module):

  def __init__(self, cfg: TowerConfig, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.num_heads = cfg.num_heads
    self.q_proj = nnx.Linear(d, d, rngs=rngs)
    self.k_proj = nnx.Linear(d, d, rngs=rngs)
    self.v_proj = nnx.Linear(d, d, rngs=rngs)
    self.out_proj = nnx.Linear(d, d, rngs=rngs)

  def __call__(self, x_bld, causal: bool):
    b, l, d = x_bld.shape
    split = lambda y: y.reshape(b, l, self.num_heads, d // self.num_heads)
    q, k, v = split(self.q_proj(x_bld)), split(self.k_proj(x_bld)), split(self.v_proj(x_bld))
    logits_bhqk = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (d // self.num_heads) ** -0.5
    if causal:
      logits_bhqk = jnp.where(jnp.tril(jnp.ones((l, l), bool)), logits_bhqk, jnp.finfo(logits_bhqk.dtype).min)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits_bhqk, axis=-1), v)
    return self.out_proj(out.reshape(b, l, d))


class Mlp(nnx.Module):

  def __init__(self, cfg: TowerConfig, rngs: nnx.Rngs):
    self.act = ACTIVATIONS[cfg.hidden_act]
    self.fc1 = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, rngs=rngs)
    self.fc2 = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, rngs=rngs)

  def __call__(self, x):
    return self.fc2(self.act(self.fc1(x)))


def _norm(cfg: TowerConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # Two-pass variance as torch computes it: the fast E[x^2] - E[x]^2 drifts by ~1e-6.
  return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, use_fast_variance=False, rngs=rngs)


class EncoderLayer(nnx.Module):

  def __init__(self, cfg: TowerConfig, rngs: nnx.Rngs):
    self.layer_norm1 = _norm(cfg, rngs)
    self.self_attn = Attention(cfg, rngs)
    self.layer_norm2 = _norm(cfg, rngs)
    self.mlp = Mlp(cfg, rngs)

  def __call__(self, x, causal: bool):
    x = x + self.self_attn(self.layer_norm1(x), causal)
    return x + self.mlp(self.layer_norm2(x))


class Encoder(nnx.Module):

  def __init__(self, cfg: TowerConfig, rngs: nnx.Rngs):
    self.layers = nnx.List([EncoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])

  def __call__(self, x, causal: bool):
    for layer in self.layers:
      x = layer(x, causal)
    return x


class TextEmbeddings(nnx.Module):

  def __init__(self, cfg: ClipConfig, rngs: nnx.Rngs):
    self.token_embedding = nnx.Embed(cfg.vocab_size, cfg.text.hidden_size, rngs=rngs)
    self.position_embedding = nnx.Embed(cfg.max_positions, cfg.text.hidden_size, rngs=rngs)

  def __call__(self, ids_bl):
    return self.token_embedding(ids_bl) + self.position_embedding.embedding[:ids_bl.shape[1]]


class TextTransformer(nnx.Module):

  def __init__(self, cfg: ClipConfig, rngs: nnx.Rngs):
    self.eos_token_id = cfg.eos_token_id
    self.embeddings = TextEmbeddings(cfg, rngs)
    self.encoder = Encoder(cfg.text, rngs)
    self.final_layer_norm = _norm(cfg.text, rngs)

  def __call__(self, ids_bl):
    """Token ids (start ... end, padded after the end) -> the final state at the end token [B, D]."""
    x = self.final_layer_norm(self.encoder(self.embeddings(ids_bl), causal=True))
    # As transformers pools: the first end token, or (old configs saying 2) the highest id.
    at = jnp.argmax(ids_bl, -1) if self.eos_token_id == 2 else jnp.argmax(ids_bl == self.eos_token_id, -1)
    return jnp.take_along_axis(x, at[:, None, None], axis=1)[:, 0]


class VisionEmbeddings(nnx.Module):

  def __init__(self, cfg: ClipConfig, rngs: nnx.Rngs):
    d, p = cfg.vision.hidden_size, cfg.patch_size
    self.class_embedding = nnx.Param(jax.random.normal(rngs.params(), (d,)) * d ** -0.5)
    self.patch_embedding = nnx.Conv(3, d, (p, p), strides=(p, p), padding="VALID", use_bias=False, rngs=rngs)
    self.position_embedding = nnx.Embed((cfg.image_size // p) ** 2 + 1, d, rngs=rngs)

  def __call__(self, pixels_bhwc):
    patches = self.patch_embedding(pixels_bhwc)
    patches_bnd = patches.reshape(patches.shape[0], -1, patches.shape[-1])  # row-major, as torch flattens
    cls = jnp.broadcast_to(self.class_embedding[...], (patches_bnd.shape[0], 1, patches_bnd.shape[-1]))
    return jnp.concatenate([cls, patches_bnd], axis=1) + self.position_embedding.embedding[...]


class VisionTransformer(nnx.Module):

  def __init__(self, cfg: ClipConfig, rngs: nnx.Rngs):
    self.embeddings = VisionEmbeddings(cfg, rngs)
    self.pre_layrnorm = _norm(cfg.vision, rngs)  # sic: transformers' name
    self.encoder = Encoder(cfg.vision, rngs)
    self.post_layernorm = _norm(cfg.vision, rngs)

  def __call__(self, pixels_bhwc):
    """Normalised pixels [B, S, S, 3] -> the class token's final state [B, D]."""
    x = self.encoder(self.pre_layrnorm(self.embeddings(pixels_bhwc)), causal=False)
    return self.post_layernorm(x[:, 0])


class ClipModel(nnx.Module):

  def __init__(self, cfg: ClipConfig, rngs: nnx.Rngs):
    self.config = cfg
    self.text_model = TextTransformer(cfg, rngs)
    self.vision_model = VisionTransformer(cfg, rngs)
    self.text_projection = nnx.Linear(cfg.text.hidden_size, cfg.projection_dim, use_bias=False, rngs=rngs)
    self.visual_projection = nnx.Linear(cfg.vision.hidden_size, cfg.projection_dim, use_bias=False, rngs=rngs)
    self.logit_scale = nnx.Param(jnp.asarray(2.6592, jnp.float32))  # log(1/0.07), CLIP's initial value

  def text_features(self, ids_bl):
    """[B, projection_dim], not normalised (transformers' `get_text_features`)."""
    return self.text_projection(self.text_model(ids_bl))

  def image_features(self, pixels_bhwc):
    """[B, projection_dim], not normalised (transformers' `get_image_features`)."""
    return self.visual_projection(self.vision_model(pixels_bhwc))
