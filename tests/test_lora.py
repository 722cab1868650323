"""LoRA fine-tuning (vdit.finetune) and adapters in the diffusers/PEFT convention: the low-rank path
equals its merged kernel, files round-trip under diffusers names, a tiny fine-tune trains adapters
alone on a frozen base (which it never writes) and lowers the loss on a new colour, sampling with
an adapter at scale 0 is the base exactly, merging equals sampling with --lora, and bad adapters
are one error line."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import cli, trained_tiny
from vdit.interop.wan import lora_weights
from vdit.model import lora

pytestmark = pytest.mark.slow  # trains a tiny base, then adapters on it


def test_low_rank_path_equals_the_merged_kernel():
  """Dense with an adapter computes x (W + s A B) + b, for plain and head-shaped kernels; B starts at 0."""
  import types
  from flax import nnx
  from vdit.model.layers import Dense
  for in_shape, in_axes, out_shape, out_axes in (((12,), ("embed",), (3, 4), ("heads", "kv")),
                                                 ((3, 4), ("heads", "kv"), (12,), ("embed",))):
    dense = Dense(in_shape, out_shape, in_axes=in_axes, out_axes=out_axes, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (5,) + in_shape)
    plain = np.asarray(dense(x))
    lora.attach(types.SimpleNamespace(mlp=types.SimpleNamespace(up=dense)),
                lora.LoRASpec(rank=2, alpha=3.0, targets=("mlp.up",)), nnx.Rngs(1))
    np.testing.assert_array_equal(np.asarray(dense(x)), plain)  # B = 0: the base exactly
    dense.lora_b = nnx.data(nnx.LoRAParam(jax.random.normal(jax.random.key(2), dense.lora_b.shape)))
    merged = lora.merge({"d": {"kernel": dense.kernel[...]}},
                        [({"d": {"lora_a": dense.lora_a[...], "lora_b": dense.lora_b[...]}}, 1.5)])["d"]["kernel"]
    expected = jnp.tensordot(x, merged, len(in_shape)) + dense.bias[...]
    np.testing.assert_allclose(np.asarray(dense(x)), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_dropout_drops_whole_input_rows_of_a_and_rescales_the_rest():
  a = jnp.ones((2, 400, 3))  # [layers, in, rank]
  tree = {"blocks": {"mlp": {"up": {"lora_a": a, "lora_b": jnp.ones((2, 3, 5))}}}}
  dropped = lora.drop_inputs(tree, jax.random.key(0), 0.25)["blocks"]["mlp"]["up"]
  rows = np.asarray(dropped["lora_a"])
  np.testing.assert_allclose(np.unique(rows), [0.0, 1 / 0.75], rtol=1e-6)
  assert (rows == rows[..., :1]).all()  # a row goes whole
  assert 0.18 < (rows[..., 0] == 0).mean() < 0.32
  np.testing.assert_array_equal(np.asarray(dropped["lora_b"]), 1.0)  # B untouched


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """The shared tiny trained model (its blocks' adaLN gates open: adapters on the blocks act through
  them) and a tiny world of the new colour."""
  _, workdir = trained_tiny(tmp_path_factory)
  root = tmp_path_factory.mktemp("lora")
  from vdit.toy import world
  world.generate(str(root / "purple"), num_clips=64, num_frames=6, height=16, width=16, num_held_out=1, num_shards=1,
                 colours=("purple",))
  return root, Path(workdir)


def _digest(directory) -> str:
  h = hashlib.sha256()
  for dirpath, _, files in sorted(os.walk(directory)):
    for name in sorted(files):
      with open(os.path.join(dirpath, name), "rb") as f:
        h.update(name.encode() + f.read())
  return h.hexdigest()


def _params(workdir):
  from vdit.config import pretrained
  from vdit.parallel import sharding
  config = pretrained.load_config(str(workdir))
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  with pretrained.Checkpoints(str(workdir), config, mesh) as checkpoints:
    return config, mesh, checkpoints.restore(checkpoints.select(None)[0])


def _purple_loss(config, params, data_dir) -> float:
  """The flow loss of `params` on the purple clips, fixed noise and times (lower: fits them better)."""
  from flax import nnx
  from vdit.data import dataset_files
  from vdit.diffusion import flow
  from vdit.media import pixels
  from vdit.model import factory
  from vdit.text import tokenizer as tokenizer_lib
  clips = dataset_files.read_clips(data_dir, limit=16)
  video = pixels.to_model_space(jnp.asarray(np.stack([c["frames"][:4] for c in clips])))
  tokenizer = tokenizer_lib.Tokenizer(max_length=config.text.max_length)
  tokens, mask = tokenizer.encode_batch([c["caption"] for c in clips])
  model = nnx.merge(factory.abstract_model(config)[0], params)
  t = jnp.linspace(0.2, 0.9, len(clips))
  noise = jax.random.normal(jax.random.key(0), video.shape)
  x_t, target = flow.noisy_sample(video, noise, t)
  return float(jnp.mean(jnp.square(model.velocity(x_t, t, model.encode_text(tokens, mask), mask) - target)))


def test_finetune_trains_adapters_alone_resumes_and_learns(base, tmp_path):
  root, base_workdir = base
  before = _digest(base_workdir)
  workdir = tmp_path / "lora"
  args = ("vdit.finetune", f"--base={base_workdir}", f"--workdir={workdir}", "--config=configs/finetune_toy.py",
          f"--config.data_dir={root / 'purple'}",
          "--config.rank=4", "--config.peak_lr=1e-2", "--config.ema_decay=0", "--config.warmup_steps=2", "--config.log_every=5",
          "--config.checkpoint_every=15")
  read_losses = lambda: {m["step"]: m["loss"] for m in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
                         if "loss" in m}  # the last line of a step wins
  result = cli(*args, "--config.num_steps=40")
  assert result.returncode == 0, result.stderr[-3000:]
  straight = read_losses()
  assert sorted(straight) == [5, 10, 15, 20, 25, 30, 35, 40]
  # As if killed after step 15's checkpoint: the rerun resumes there (same adapters, optimizer state,
  # data position and base step) and repeats steps 20-40 exactly.
  for step in ("30", "40"):
    shutil.rmtree(workdir / "checkpoints" / step)
  result = cli(*args, "--config.num_steps=40")
  assert result.returncode == 0, result.stderr[-3000:]
  resumed = read_losses()
  assert "Step 16: compiled" in result.stderr  # it resumed after 15, not from the start
  np.testing.assert_allclose([resumed[s] for s in range(20, 45, 5)], [straight[s] for s in range(20, 45, 5)], rtol=1e-6)
  assert _digest(base_workdir) == before  # the base is never written
  config = json.loads((workdir / "config.json").read_text())
  assert config["lora"]["rank"] == 4 and config["finetune"]["base"] == str(base_workdir)
  assert config["finetune"]["base_step"] == 60
  # Checkpoints hold adapters and their optimizer state only: a small fraction of the base's.
  size = lambda d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
  assert size(workdir / "checkpoints" / "40") < 0.2 * size(base_workdir / "checkpoints" / "60")

  # Checkpoints and the adapter file hold the adapters alone, under diffusers/PEFT names.
  from vdit.core import weights
  tensors, metadata = weights.load(str(workdir / "adapter.safetensors"))
  assert "transformer.blocks.1.attn2.to_q.lora_A.weight" in tensors  # the toy settings adapt cross-attention
  assert "transformer.blocks.0.attn2.to_out.0.lora_B.weight" in tensors
  assert all(".lora_A.weight" in k or ".lora_B.weight" in k for k in tensors)
  peft = json.loads(metadata[lora_weights.METADATA_KEY])
  assert peft["transformer.r"] == 4 and peft["transformer.lora_alpha"] == 4.0
  base_config, mesh, base_params = _params(base_workdir)
  total = sum(np.size(x) for x in jax.tree.leaves(base_params))
  trained = sum(np.size(x) for x in tensors.values())
  assert trained < 0.2 * total, (trained, total)

  # The adapter lowers the flow loss on the new colour; at scale 0 the base comes back exactly.
  purple = str(root / "purple")
  adapted = lora_weights.apply(base_params, [(str(workdir / "adapter.safetensors"), 1.0)])
  assert _purple_loss(base_config, adapted, purple) < 0.97 * _purple_loss(base_config, base_params, purple)  # 0.95 seen
  unchanged = lora_weights.apply(base_params, [(str(workdir / "adapter.safetensors"), 0.0)])
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), unchanged, base_params)
  halves = lora_weights.apply(base_params, [(str(workdir / "adapter.safetensors"), 0.5)] * 2)  # adapters add up
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
               halves, adapted)

  # merge writes a workdir holding exactly the weights `--lora` samples with.
  merged = tmp_path / "merged"
  result = cli("vdit.finetune", "merge", f"--base={base_workdir}", f"--lora={workdir / 'adapter.safetensors'}:1",
               f"--workdir={merged}")
  assert result.returncode == 0, result.stderr[-3000:]
  _, _, merged_params = _params(merged)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6),
               merged_params, adapted)
  out = tmp_path / "out"
  result = cli("vdit.sample", f"--workdir={base_workdir}", f"--lora={workdir / 'adapter.safetensors'}",
               "--prompt=a purple circle moving left", f"--out={out}", "--steps=2", "--scale=1")
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads((out / "index.jsonl").read_text())
  assert record["lora"] == [{"file": str(workdir / "adapter.safetensors"), "scale": 1.0}]

  # A fine-tuning workdir is sampled through its base: one line that says how.
  refused = cli("vdit.sample", f"--workdir={workdir}", "--prompt=a", f"--out={tmp_path / 'x'}")
  assert refused.returncode == 2 and "--lora=" in refused.stderr.splitlines()[-1]
  assert not (tmp_path / "x").exists()


def test_adapter_files_round_trip_and_mismatches_name_the_tensor(base, tmp_path):
  _, base_workdir = base
  _, _, params = _params(base_workdir)
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  blocks = params["dit"]["blocks"]
  depth = blocks["mlp"]["up"]["kernel"].shape[0]
  rng = np.random.default_rng(0)
  layers = ("self_attn.query", "self_attn.out", "mlp.down")
  adapter = {"dit": {"blocks": {}}}
  for layer in layers:
    node, kernel = adapter["dit"]["blocks"], blocks
    for name in layer.split("."):
      node, kernel = node.setdefault(name, {}), kernel[name]
    num_in = 2 if layer.endswith("out") else 1
    shape = kernel["kernel"].shape
    node["lora_a"] = rng.normal(size=shape[:1 + num_in] + (3,)).astype(np.float32)
    node["lora_b"] = rng.normal(size=(depth, 3) + shape[1 + num_in:]).astype(np.float32)
  path = str(tmp_path / "a.safetensors")
  lora_weights.save(path, adapter, rank=3, alpha=6.0, layers=layers)
  loaded = lora_weights.load(path, shapes)
  for layer in layers:
    got, want = loaded["dit"]["blocks"], adapter["dit"]["blocks"]
    for name in layer.split("."):
      got, want = got[name], want[name]
    np.testing.assert_allclose(got["lora_a"], want["lora_a"], rtol=1e-6)
    np.testing.assert_allclose(got["lora_b"], want["lora_b"] * 2.0, rtol=1e-6)  # alpha / rank folded in

  from vdit.core import weights
  tensors, metadata = weights.load(path)
  cases = {
      "wrong_shape": ({**tensors, "transformer.blocks.0.attn1.to_q.lora_A.weight": np.zeros((3, 7), np.float32)},
                      "'transformer.blocks.0.attn1.to_q.lora_A.weight' has shape (3, 7), the base needs (3, 32)"),
      "no_lora": ({"blocks.0.attn1.to_q.weight": np.zeros((4, 4), np.float32)}, "is not a LoRA tensor"),
      "deeper": ({**tensors, "transformer.blocks.9.ffn.net.2.lora_A.weight": tensors[
          "transformer.blocks.0.ffn.net.2.lora_A.weight"], "transformer.blocks.9.ffn.net.2.lora_B.weight": tensors[
              "transformer.blocks.0.ffn.net.2.lora_B.weight"]}, "is for block 9, but the base has 2 blocks"),
  }
  for name, (bad, message) in cases.items():
    bad_path = str(tmp_path / f"{name}.safetensors")
    weights.save(bad_path, bad, metadata)
    with pytest.raises(lora_weights.AdapterError, match=None) as error:
      lora_weights.load(bad_path, shapes)
    assert message in str(error.value), str(error.value)
  # The command contract: one line, exit 2, nothing written.
  result = cli("vdit.sample", f"--workdir={base_workdir}", "--prompt=a", f"--out={tmp_path / 'out'}",
               f"--lora={tmp_path / 'wrong_shape.safetensors'}:0.5")
  assert result.returncode == 2 and "has shape (3, 7)" in result.stderr.splitlines()[-1]
  assert not (tmp_path / "out").exists()


@pytest.mark.reference
def test_parity_with_a_diffusers_peft_adapter(tmp_path):
  """A tiny random diffusers WanTransformer3DModel with a PEFT LoRA (random non-zero A and B),
  saved the way diffusers saves LoRAs, converted (base) and loaded (adapter) by vdit: outputs agree
  with torch's, adapter active, within 1e-4 of the output's scale."""
  torch = pytest.importorskip("torch", reason="parity needs the test-only extra torch (CPU)")
  pytest.importorskip("peft", reason="parity needs the test-only extra peft")
  diffusers = pytest.importorskip("diffusers", reason="parity needs the test-only extra diffusers")
  from flax import nnx
  from peft import LoraConfig
  from peft.utils import get_peft_model_state_dict
  from tests.test_wan_dit import _REL_TOL, _inputs, _vdit_forward, random_wan_pair
  ref, dit = random_wan_pair(torch, diffusers.WanTransformer3DModel, tmp_path)

  targets = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
  ref.add_adapter(LoraConfig(r=4, lora_alpha=6, target_modules=targets, init_lora_weights=False))
  with torch.no_grad():  # B random too (PEFT's init leaves it small): the adapter must matter
    for name, p in ref.named_parameters():
      if "lora_B" in name:
        p.copy_(torch.randn_like(p) * 0.3)
  diffusers.WanPipeline.save_lora_weights(str(tmp_path / "adapter"), transformer_lora_layers=get_peft_model_state_dict(ref),
                                          transformer_lora_adapter_metadata=ref.peft_config["default"].to_dict())
  adapter = str(tmp_path / "adapter" / "pytorch_lora_weights.safetensors")

  params = {"dit": nnx.to_pure_dict(nnx.state(dit, nnx.Param))}
  merged = lora_weights.apply(params, [(adapter, 1.0)])
  nnx.update(dit, nnx.State(merged["dit"]))
  x, t, context = _inputs(frames=3)
  with torch.no_grad():
    want = ref(torch.from_numpy(x), torch.from_numpy(t * 1000), torch.from_numpy(context), return_dict=False)[0].numpy()
  got = _vdit_forward(dit, x, t, context)
  scale, err = np.abs(want).max(), np.abs(got - want).max()
  print(f"LoRA parity: max abs error {err:.3g}, output scale {scale:.3g}, relative {err / scale:.3g}")
  assert err <= _REL_TOL * scale
  ref.disable_adapters()
  with torch.no_grad():
    base = ref(torch.from_numpy(x), torch.from_numpy(t * 1000), torch.from_numpy(context), return_dict=False)[0].numpy()
  assert np.abs(base - want).max() > 0.05 * scale  # the adapter changes the output: the check above bites
