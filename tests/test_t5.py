"""T5 / umT5 encoder: forward contract, Hugging Face weight files, sentencepiece tokenizer, and
parity with transformers' T5EncoderModel / UMT5EncoderModel.

The networks are tiny (d_model 32, 2 layers, 4 heads); the relative-position settings (8 buckets,
max distance 16, 24 tokens) reach both the exact and the log-spaced buckets and the clamp. Parity
needs torch and transformers (the `reference` extra) and is skipped without them; the tokenizer
tests need sentencepiece.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vdit.parallel import sharding
from vdit.core import weights
from vdit.text import t5
from vdit.text import t5_weights
from vdit.core.weights import WeightsError

_LENGTH = 24
_LENGTHS = (24, 17, 5)  # real tokens per row; the rest is padding
# Parity: max |vdit - transformers| over all positions <= _PARITY_TOL * max |transformers|.
_PARITY_TOL = 1e-4


def _config(model_type="umt5", feed_forward_proj="gated-gelu"):
  return t5.T5Config(vocab_size=100, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                     relative_attention_num_buckets=8, relative_attention_max_distance=16,
                     feed_forward_proj=feed_forward_proj, model_type=model_type)


def _hf_config_dict(cfg: t5.T5Config) -> dict:
  d = {f: getattr(cfg, f) for f in ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers",
                                    "relative_attention_num_buckets", "relative_attention_max_distance",
                                    "feed_forward_proj", "layer_norm_epsilon", "model_type")}
  return {**d, "dropout_rate": 0.0, "is_encoder_decoder": True}


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 100, (len(_LENGTHS), _LENGTH)).astype(np.int32)
  mask = np.arange(_LENGTH)[None, :] < np.asarray(_LENGTHS)[:, None]
  return tokens, mask


def _forward(model, tokens, mask):
  graphdef, state = nnx.split(model)
  run = jax.jit(lambda s, t, m: nnx.merge(graphdef, s)(t, m))
  return np.asarray(run(state, jnp.asarray(tokens), jnp.asarray(mask)))


def _randomize_norms(model, seed=0):
  """Norm scales away from 1 so a swapped or dropped norm shows in the output."""
  rng = np.random.default_rng(seed)
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    if path[-1] == "scale":
      var.set_value(jnp.asarray(rng.uniform(0.5, 1.5, var.get_value().shape), var.get_value().dtype))


def _save_checkpoint(folder, model, tensors=None, shards=1):
  """save_pretrained-like folder: config.json + model.safetensors (or shards + index)."""
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(_hf_config_dict(model.config), f)
  tensors = t5_weights.to_hf_tensors(model) if tensors is None else tensors
  if shards == 1:
    weights.save(os.path.join(folder, "model.safetensors"), tensors)
    return str(folder)
  names = sorted(tensors)
  weight_map = {}
  for i in range(shards):
    file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
    part = names[i::shards]
    weights.save(os.path.join(folder, file), {n: tensors[n] for n in part})
    weight_map.update({n: file for n in part})
  with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
  return str(folder)


@pytest.fixture(scope="module")
def umt5_model():
  model = t5.T5Encoder(_config("umt5"), rngs=nnx.Rngs(0))
  _randomize_norms(model)
  return model


# ---------------------------------------------------------------- the network (no transformers)

@pytest.mark.parametrize("model_type", ["t5", "umt5"])
def test_forward_shape_zero_padding_and_bias_tables(model_type):
  model = t5.T5Encoder(_config(model_type), rngs=nnx.Rngs(0))
  tokens, mask = _inputs()
  out = _forward(model, tokens, mask)
  assert out.shape == (len(_LENGTHS), _LENGTH, model.dim) and model.dim == 32
  assert np.isfinite(out).all()
  assert np.all(out[~mask] == 0) and np.all(np.abs(out[mask]).sum(-1) > 0)
  tables = [layer.attn.relative_bias is not None for layer in model.layers]
  assert tables == ([True, True] if model_type == "umt5" else [True, False])


@pytest.mark.parametrize("model_type", ["t5", "umt5"])
def test_padding_does_not_change_real_tokens(model_type):
  model = t5.T5Encoder(_config(model_type), rngs=nnx.Rngs(1))
  tokens, _ = _inputs()
  n = 9
  short = _forward(model, tokens[:1, :n], np.ones((1, n), bool))
  mask = np.arange(_LENGTH)[None, :] < n
  padded = _forward(model, tokens[:1], mask)  # random ids (not 0) after the real tokens
  np.testing.assert_allclose(padded[:, :n], short, atol=1e-5, rtol=1e-5)


def test_every_parameter_has_logical_axes_and_shards(umt5_model):
  flat = nnx.to_flat_state(nnx.state(umt5_model, nnx.Param))
  for path, var in flat:
    axes = var.get_metadata().get("logical_axes")
    assert axes is not None and len(axes) == var.get_value().ndim, path
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  specs = sharding.state_shardings(nnx.state(umt5_model, nnx.Param), mesh)
  assert specs["embed"]["table"].spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  assert specs["layers"][0]["attn"]["q"]["kernel"].spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  assert specs["layers"][0]["attn"]["o"]["kernel"].spec == jax.sharding.PartitionSpec(("tensor", "fsdp"), None, None)
  assert specs["layers"][0]["ffn"]["wo"]["kernel"].spec == jax.sharding.PartitionSpec(("tensor", "fsdp"), None)


def test_relative_buckets_cover_exact_log_and_clamped_distances():
  b = t5.relative_position_buckets(1, 40, num_buckets=8, max_distance=16)[0]
  # 4 buckets per direction: distances 0, 1 exact; 2..15 log-spaced into 2, 3; >= 16 clamp to 3.
  assert b.tolist()[:4] == [0, 5, 6, 6] and b[15] == 7 and b[39] == 7
  assert t5.relative_position_buckets(40, 1, 8, 16)[:, 0].tolist()[:3] == [0, 1, 2]


def test_config_from_dict_rejects_bad_values():
  d = _hf_config_dict(_config())
  assert t5.T5Config.from_dict(d) == _config()
  with pytest.raises(t5.T5ConfigError, match="feed_forward_proj"):
    t5.T5Config.from_dict({**d, "feed_forward_proj": "gated-swishy"})
  with pytest.raises(t5.T5ConfigError, match=r"missing T5 config keys \['d_ff'\]"):
    t5.T5Config.from_dict({k: v for k, v in d.items() if k != "d_ff"})


# ---------------------------------------------------------------- weight files (no transformers)

@pytest.mark.parametrize("shards", [1, 3])
def test_checkpoint_round_trip_single_and_sharded(umt5_model, tmp_path, shards):
  folder = _save_checkpoint(tmp_path / "ckpt", umt5_model, shards=shards)
  loaded = t5_weights.load_encoder(folder)
  tokens, mask = _inputs()
  np.testing.assert_array_equal(_forward(loaded, tokens, mask), _forward(umt5_model, tokens, mask))


def test_sharded_load_matches_single_device(umt5_model, tmp_path):
  folder = _save_checkpoint(tmp_path / "ckpt", umt5_model)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  loaded = t5_weights.load_encoder(folder, mesh=mesh)
  q = loaded.layers[1].attn.q.kernel.get_value()
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  tokens, mask = _inputs()
  with jax.set_mesh(mesh), sharding.activation_rules(sharding.DEFAULT_RULES):
    out = _forward(loaded, tokens[:2], mask[:2])
  np.testing.assert_allclose(out, _forward(umt5_model, tokens[:2], mask[:2]), atol=1e-5, rtol=1e-5)


def test_bfloat16_weights(umt5_model, tmp_path):
  folder = _save_checkpoint(tmp_path / "ckpt", umt5_model)
  loaded = t5_weights.load_encoder(folder, param_dtype=jnp.bfloat16)
  assert loaded.embed.table.get_value().dtype == jnp.bfloat16
  tokens, mask = _inputs()
  out, ref = _forward(loaded, tokens, mask), _forward(umt5_model, tokens, mask)
  assert out.dtype == jnp.bfloat16
  assert np.abs(out.astype(np.float32) - ref).max() < 0.1 * np.abs(ref).max()


def test_decoder_tensors_and_tied_embedding_alias_are_accepted(umt5_model, tmp_path):
  tensors = t5_weights.to_hf_tensors(umt5_model)
  tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"]
  tensors["decoder.final_layer_norm.weight"] = np.ones(32, np.float32)
  tensors["lm_head.weight"] = np.zeros((100, 32), np.float32)
  t5_weights.load_encoder(_save_checkpoint(tmp_path / "ckpt", umt5_model, tensors))


def test_missing_tensor_is_one_error_naming_file_and_tensor(umt5_model, tmp_path):
  tensors = t5_weights.to_hf_tensors(umt5_model)
  name = "encoder.block.1.layer.1.DenseReluDense.wi_1.weight"
  del tensors[name]
  folder = _save_checkpoint(tmp_path / "ckpt", umt5_model, tensors)
  with pytest.raises(WeightsError, match=rf"ckpt.*missing tensors \['{name}'\] \(1 of"):
    t5_weights.load_encoder(folder)


def test_missing_tensor_in_a_shard_names_that_shard(umt5_model, tmp_path):
  folder = _save_checkpoint(tmp_path / "ckpt", umt5_model, shards=2)
  with open(os.path.join(folder, "model.safetensors.index.json")) as f:
    weight_map = json.load(f)["weight_map"]
  shard = os.path.join(folder, weight_map["shared.weight"])
  tensors, _ = weights.load(shard)
  del tensors["shared.weight"]
  weights.save(shard, tensors)
  with pytest.raises(WeightsError, match=rf"{os.path.basename(shard)}: missing tensor 'shared.weight'"):
    t5_weights.load_encoder(folder)


def test_wrong_shape_is_one_error_naming_file_and_tensor(umt5_model, tmp_path):
  tensors = t5_weights.to_hf_tensors(umt5_model)
  name = "encoder.block.0.layer.0.SelfAttention.k.weight"
  tensors[name] = tensors[name][:16]
  folder = _save_checkpoint(tmp_path / "ckpt", umt5_model, tensors)
  with pytest.raises(WeightsError, match=rf"model.safetensors: tensor '{name}' has shape \(16, 32\), "
                                         r"the config expects \(32, 32\)"):
    t5_weights.load_encoder(folder)


def test_unexpected_tensor_and_bad_files_are_clear_errors(umt5_model, tmp_path):
  tensors = t5_weights.to_hf_tensors(umt5_model)
  tensors["encoder.block.2.layer.0.layer_norm.weight"] = np.ones(32, np.float32)  # a third layer
  folder = _save_checkpoint(tmp_path / "extra", umt5_model, tensors)
  with pytest.raises(WeightsError, match=r"model.safetensors: unexpected tensor 'encoder.block.2"):
    t5_weights.load_encoder(folder)
  with pytest.raises(WeightsError, match="has neither model.safetensors nor"):
    t5_weights.load_encoder(str(tmp_path))
  folder = _save_checkpoint(tmp_path / "noconfig", umt5_model)
  os.remove(os.path.join(folder, "config.json"))
  with pytest.raises(WeightsError, match=r"noconfig/config.json' does not exist"):
    t5_weights.load_encoder(folder)


# ---------------------------------------------------------------- sentencepiece tokenizer

_CORPUS = ["a red ball rolls to the left", "a blue square moves up slowly", "the green circle bounces",
           "two small cubes spin in place", "a yellow triangle slides down and to the right"] * 20


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory):
  spm = pytest.importorskip("sentencepiece", reason="sentencepiece is not installed (pip install sentencepiece)")
  folder = tmp_path_factory.mktemp("spm")
  # T5's id layout: pad 0, eos 1, unk 2, no bos.
  spm.SentencePieceTrainer.train(sentence_iterator=iter(_CORPUS), model_prefix=str(folder / "spiece"),
                                 vocab_size=40, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                 bos_id=-1, minloglevel=2)
  return str(folder / "spiece.model")


def test_sentencepiece_encode_batch(spm_file):
  from vdit.text.sentencepiece_tokenizer import SentencePieceTokenizer
  from vdit.text.tokenizer import PromptError
  tok = SentencePieceTokenizer(spm_file, max_length=32)
  ids, mask = tok.encode_batch(["a red ball", "the green circle bounces"])
  assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == mask.shape == (2, 32)
  assert (tok.pad_id, tok.eos_id) == (0, 1) and tok.vocab_size == 40
  for row in range(2):
    n = mask[row].sum()
    assert mask[row, :n].all() and ids[row, n - 1] == 1 and np.all(ids[row, n:] == 0)
    assert np.all(ids[row, :n - 1] > 2)  # known words: no unk, no specials
  long_prompt = " ".join(["a yellow triangle slides down"] * 4)
  with pytest.raises(PromptError, match="limit is 32"):
    tok.encode_batch([long_prompt])
  ids, mask = tok.encode_batch([long_prompt], truncate=True)
  assert mask.all() and ids[0, -1] == 1


def test_non_sentencepiece_file_is_a_clear_error(tmp_path):
  pytest.importorskip("sentencepiece", reason="sentencepiece is not installed (pip install sentencepiece)")
  from vdit.text.sentencepiece_tokenizer import SentencePieceTokenizer, TokenizerFileError
  path = tmp_path / "tokenizer.json"
  path.write_text('{"version": "1.0", "model": {"type": "BPE"}}')
  with pytest.raises(TokenizerFileError, match=r"tokenizer.json' is not a sentencepiece model"):
    SentencePieceTokenizer(str(path), max_length=8)
  with pytest.raises(TokenizerFileError, match="does not exist"):
    SentencePieceTokenizer(str(tmp_path / "missing.model"), max_length=8)


# ---------------------------------------------------------------- parity with transformers

def _transformers():
  torch = pytest.importorskip("torch", reason="parity needs torch (the `reference` extra: pip install torch)")
  transformers = pytest.importorskip(
      "transformers", reason="parity needs transformers (the `reference` extra: pip install transformers)")
  return torch, transformers


@pytest.mark.reference
@pytest.mark.parametrize("model_type,feed_forward_proj", [("t5", "gated-gelu"), ("umt5", "gated-gelu"),
                                                          ("t5", "relu")])
def test_parity_with_transformers(tmp_path, model_type, feed_forward_proj):
  torch, transformers = _transformers()
  torch.manual_seed(0)
  cfg = _config(model_type, feed_forward_proj)
  hf_cls, hf_cfg_cls = ((transformers.UMT5EncoderModel, transformers.UMT5Config) if model_type == "umt5" else
                        (transformers.T5EncoderModel, transformers.T5Config))
  hf_config = hf_cfg_cls(**_hf_config_dict(cfg), attn_implementation="eager")
  ref_model = hf_cls(hf_config).eval()
  with torch.no_grad():
    for name, p in ref_model.named_parameters():
      if "layer_norm" in name:
        p.uniform_(0.5, 1.5)
  # Shard so that the index path is exercised with transformers' own output.
  ref_model.save_pretrained(tmp_path, max_shard_size="40KB")
  assert os.path.isfile(tmp_path / "model.safetensors.index.json")
  tokens, mask = _inputs()
  with torch.no_grad():
    ref = ref_model(input_ids=torch.from_numpy(tokens).long(),
                    attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
  ref = ref * mask[..., None]  # vdit zeroes padded positions
  out = _forward(t5_weights.load_encoder(str(tmp_path)), tokens, mask)
  err, scale = np.abs(out - ref).max(), np.abs(ref).max()
  print(f"{model_type}/{feed_forward_proj}: max abs error {err:.2e}, output scale {scale:.2f}")
  assert err <= _PARITY_TOL * scale, (err, scale)


@pytest.mark.reference
def test_tokenizer_matches_transformers_t5tokenizer(spm_file, tmp_path):
  _, transformers = _transformers()
  from vdit.text.sentencepiece_tokenizer import SentencePieceTokenizer
  with open(spm_file, "rb") as f:
    (tmp_path / "spiece.model").write_bytes(f.read())
  (tmp_path / "tokenizer_config.json").write_text(
      json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "legacy": True}))
  hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  tok = SentencePieceTokenizer(spm_file, max_length=32)
  prompts = ["a red ball", "The green  circle bounces!", "  two cubes", "zebra 42", ""]
  hf_ids = hf(prompts, padding="max_length", max_length=32, return_tensors="np")
  ids, mask = tok.encode_batch(prompts)
  np.testing.assert_array_equal(ids, hf_ids["input_ids"])
  np.testing.assert_array_equal(mask, hf_ids["attention_mask"].astype(bool))
