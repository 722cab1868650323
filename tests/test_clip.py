"""The `clip` frame classifier (vdit/safety/clip_*.py): the BPE tokenizer, CLIP checkpoint files, the
policy's concept check end to end on toy clips, its bad inputs, and parity with transformers'
CLIPModel, CLIPTokenizer and CLIPImageProcessor.

The networks are tiny (width 32, 2 layers, 4 heads, 32 px images in 8 px patches, a 600-token
vocabulary). Parity needs torch and transformers (the `reference` extra) and is skipped without them.
"""
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vdit.core.errors import UserError
from vdit.core.weights import WeightsError
from vdit.safety import clip_frames, clip_tokenizer, clip_weights, decision, policy
from vdit.safety.clip_model import ClipConfig, ClipModel, TowerConfig
from vdit.safety.frame_check import FrameChecker
from vdit.toy import world

# Parity: max |vdit - transformers| <= _PARITY_TOL * max |transformers| (float32 on CPU).
_PARITY_TOL = 1e-4
# Merges of the hand-made vocabulary, in rank order: "b c</w>" outranks "a b" in "abc", and "c a"
# outranks "a f" in "café" (é is the bytes Ã©).
_MERGES = [("r", "e"), ("re", "d</w>"), ("c", "a"), ("ca", "t</w>"), ("b", "c</w>"), ("a", "b"),
           ("Ã", "©</w>"), ("a", "f")]


def _vocab(merges=_MERGES):
  chars = clip_tokenizer._byte_chars()
  symbols = [*chars, *(c + "</w>" for c in chars), *(a + b for a, b in merges),
             clip_tokenizer.START, clip_tokenizer.END]
  return {s: i for i, s in enumerate(dict.fromkeys(symbols))}


def _write_tokenizer(folder, vocab, merges, as_json=False):
  if as_json:  # transformers 5's tokenizer.json (only the parts a CLIP tokenizer needs)
    model = {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": vocab, "merges": [list(m) for m in merges]}
    (folder / "tokenizer.json").write_text(json.dumps({"model": model}))
    return
  (folder / "vocab.json").write_text(json.dumps(vocab))
  (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def _config(vocab_size, eos_token_id):
  tower = TowerConfig(hidden_size=32, intermediate_size=37, num_layers=2, num_heads=4)
  return ClipConfig(text=tower, vision=tower, projection_dim=24, vocab_size=vocab_size, max_positions=16,
                    eos_token_id=eos_token_id, image_size=32, patch_size=8)


def _tokens(tokenizer, ids):
  names = {i: s for s, i in tokenizer.vocab.items()}
  return [names[i] for i in ids]


@pytest.mark.parametrize("as_json", [False, True])
def test_tokenizer_merges_by_rank_and_wraps_in_markers(tmp_path, as_json):
  _write_tokenizer(tmp_path, _vocab(), _MERGES, as_json)
  tok = clip_tokenizer.ClipTokenizer.from_dir(str(tmp_path))
  got = _tokens(tok, tok.encode("A  Red\tcat, it's 12 Cats!! abc Café"))
  assert got == ["<|startoftext|>", "a</w>", "red</w>", "cat</w>", ",</w>", "i", "t</w>", "'", "s</w>",
                 "1</w>", "2</w>", "ca", "t", "s</w>", "!", "!</w>", "a", "bc</w>", "ca", "f", "Ã©</w>",
                 "<|endoftext|>"]
  # The markers written in the text are the special tokens.
  assert tok.encode("<|endoftext|>x") == [tok.start_id, tok.end_id, tok.vocab["x</w>"], tok.end_id]


def test_tokenizer_pieces_follow_unicode_categories():
  assert clip_tokenizer.pieces("don't stop—ok?! x2 éa 'tis") == [
      "don", "'t", "stop", "—", "ok", "?!", "x", "2", "éa", "'t", "is"]


def _tiny_model(tmp_path, seed=0):
  vocab = _vocab()
  _write_tokenizer(tmp_path, vocab, _MERGES)
  # Built abstractly and filled from numpy: random init op by op would compile each shape (seconds).
  model = nnx.eval_shape(lambda: ClipModel(_config(len(vocab), vocab[clip_tokenizer.END]), nnx.Rngs(0)))
  rng = np.random.default_rng(seed)
  state = nnx.state(model, nnx.Param)
  for path, var in nnx.to_flat_state(state):
    shape = var.get_value().shape
    var.set_value(jnp.asarray((1.0 if path[-1] == "scale" else 0.0) + 0.2 * rng.normal(size=shape), jnp.float32))
  nnx.update(model, state)
  return model


def test_saved_clip_loads_back_in_transformers_layout(tmp_path):
  model = _tiny_model(tmp_path)
  clip_weights.save(model, str(tmp_path))
  hf = clip_weights.to_hf_tensors(model)
  assert hf["vision_model.embeddings.patch_embedding.weight"].shape == (32, 3, 8, 8)
  assert hf["text_model.encoder.layers.1.mlp.fc1.weight"].shape == (37, 32)  # [out, in]
  assert hf["vision_model.pre_layrnorm.weight"].shape == (32,) and hf["logit_scale"].shape == ()
  loaded = clip_weights.load(str(tmp_path))
  assert loaded.config == model.config
  again = clip_weights.to_hf_tensors(loaded)
  assert sorted(again) == sorted(hf) and all(np.array_equal(again[n], hf[n]) for n in hf)


@pytest.mark.parametrize("damage, match", [
    (lambda d: os.remove(d / "config.json"), "config.json' does not exist"),
    (lambda d: os.remove(d / "model.safetensors"), "model.safetensors' does not exist"),
    (lambda d: os.remove(d / "merges.txt"), "merges.txt' does not exist"),
    (lambda d: os.rename(d, str(d) + "_gone"), "clip_model' does not exist"),
])
def test_missing_model_files_are_one_line_naming_policy_line_and_file(tmp_path, damage, match):
  folder = tmp_path / "clip_model"
  folder.mkdir()
  clip_weights.save(_tiny_model(folder), str(folder))
  damage(folder)
  path = tmp_path / "p.json"
  path.write_text('{"version": 1,\n "categories": {"guns": {"action": "block", "checks": [\n'
                  '  {"type": "frames", "classifier": "clip", "concepts": ["a gun"],\n'
                  '   "model": ' + json.dumps(str(folder)) + '}]}}}\n')
  with pytest.raises(policy.PolicyError) as e:
    policy.load(str(path))
  message = str(e.value)
  assert message.startswith(f"Safety policy {path} line 4: category 'guns': clip model file ") and match in message
  assert "\n" not in message


def test_unreadable_weights_or_long_concept_stop_before_any_frame_is_scored(tmp_path):
  folder = tmp_path / "clip"
  folder.mkdir()
  clip_weights.save(_tiny_model(folder), str(folder))
  check = {"type": "frames", "classifier": "clip", "model": str(folder), "concepts": ["red " * 20]}
  path = tmp_path / "p.json"
  path.write_text(json.dumps({"version": 1, "categories": {"c": {"action": "block", "checks": [check]}}}))
  with pytest.raises(UserError, match=r"clip concept 'red red .* is 22 tokens; .* at most 16"):
    FrameChecker(policy.load(str(path)))
  (folder / "model.safetensors").write_bytes(b"not safetensors")
  check["concepts"] = ["red"]
  path.write_text(json.dumps({"version": 1, "categories": {"c": {"action": "block", "checks": [check]}}}))
  with pytest.raises(WeightsError, match="is not a readable safetensors file"):
    FrameChecker(policy.load(str(path)))


def _clip(colour, num_frames=4):
  return world.render_clip(colour, "circle", "left", start=(8.0, 8.0), speed=0.5, radius=4.0,
                           num_frames=num_frames, height=24, width=24)


def test_concept_policy_blocks_frames_that_match_a_concept(tmp_path):
  """A random CLIP whose image projection is solved so that red frames point where the concept
  "red" does and blue frames at right angles to it: the policy blocks the red clip, naming the
  concept, and passes the blue one. Exercises the files, tokenizer, both towers, preprocessing and
  the frame-check wiring."""
  model = _tiny_model(tmp_path, seed=1)
  tok = clip_tokenizer.ClipTokenizer.from_dir(str(tmp_path))
  ids = np.full((2, 16), tok.end_id, np.int32)
  for row, concept in enumerate(["red", "a cat"]):
    ids[row, :len(tok.encode(concept))] = tok.encode(concept)
  graphdef, state = nnx.split(model)
  text = np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s).text_features(x))(state, ids))
  red, blue = _clip("red"), _clip("blue")
  pixels = clip_frames.preprocess(np.concatenate([red, blue]), 32)
  pooled = np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s).vision_model(x))(state, pixels))
  away = np.linalg.svd(text)[2][-1]  # a direction at right angles to both concepts
  targets = np.concatenate([np.repeat(text[:1], len(red), 0), np.repeat(away[None], len(blue), 0)])
  model.visual_projection.kernel.set_value(jnp.asarray(np.linalg.lstsq(pooled, targets, rcond=None)[0]))
  clip_weights.save(model, str(tmp_path))
  check = {"type": "frames", "classifier": "clip", "model": str(tmp_path), "concepts": ["red", "a cat"],
           "every": 2, "threshold": 0.9}
  path = tmp_path / "p.json"
  path.write_text(json.dumps({"version": 1, "categories": {"red_things": {"action": "block", "checks": [check]}}}))
  checker = FrameChecker(policy.load(str(path)))
  verdict, _ = checker.check(red)
  assert verdict.blocked and (verdict.stage, verdict.category) == ("frames", "red_things")
  assert verdict.score > 0.99 and "clip scored 1.00 ('red') on frame " in verdict.reason, verdict
  assert checker.check(blue)[0] == decision.ALLOWED
  assert clip_frames.scorer(str(tmp_path), ("red", "a cat")).score(blue)[0].max() < 0.05


# --- parity with transformers (the `reference` extra) ---

def _reference():
  torch = pytest.importorskip("torch", reason="parity needs torch (the `reference` extra: pip install torch)")
  transformers = pytest.importorskip(
      "transformers", reason="parity needs transformers (the `reference` extra: pip install transformers)")
  return torch, transformers


_TEXTS = ["a red cat", "A  Red\tcat, it's 12 Cats!!", "Café au lait, naïve élan — 3.14?!",
          "don't STOP'til x2", "日本語のテキスト", "emoji 🙂🙂 and tabs\t\tend ", "'s 't're 've'm 'll 'd",
          "<|endoftext|> inside"]


def _train_tokenizer(folder):
  """A real merge table: a byte-level BPE trained with CLIP's pre-tokenizer on a small text."""
  from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"), "removed", invert=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False)])
  corpus = [t.lower() for t in _TEXTS] * 3 + ["the cat sat on the red mat", "a photo of a gun", "blood on a street",
                                              "a cafe in the rain", "it's started, they're naive"] * 5
  tok.train_from_iterator(corpus, trainers.BpeTrainer(
      vocab_size=600, end_of_word_suffix="</w>", initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      special_tokens=["<|startoftext|>", "<|endoftext|>"], show_progress=False))
  trained = json.loads(tok.to_str())["model"]["merges"]
  merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained]
  _write_tokenizer(folder, _vocab(merges), merges)  # every byte, with and without </w>, then the merges


@pytest.mark.reference
def test_tokenizer_matches_transformers(tmp_path):
  _, transformers = _reference()
  _train_tokenizer(tmp_path)
  theirs = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
  ours = clip_tokenizer.ClipTokenizer.from_dir(str(tmp_path))
  assert len(ours.ranks) > 50  # the trained table has merges to apply
  for text in _TEXTS:
    assert ours.encode(text) == theirs(text)["input_ids"], text
  theirs.save_pretrained(str(tmp_path / "v5"))  # transformers 5 writes tokenizer.json only
  from_json = clip_tokenizer.ClipTokenizer.from_dir(str(tmp_path / "v5"))
  assert [from_json.encode(t) for t in _TEXTS] == [ours.encode(t) for t in _TEXTS]


def _relative_error(ours, theirs):
  return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


@pytest.mark.reference
@pytest.mark.parametrize("hidden_act, eos", [("quick_gelu", "end"), ("gelu", "legacy")])
def test_clip_matches_transformers(tmp_path, hidden_act, eos):
  torch, transformers = _reference()
  _train_tokenizer(tmp_path)
  tok = clip_tokenizer.ClipTokenizer.from_dir(str(tmp_path))
  vocab_size = max(tok.vocab.values()) + 1
  tower = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
               hidden_act=hidden_act, layer_norm_eps=1e-5)
  text = dict(tower, vocab_size=vocab_size, max_position_embeddings=24,
              eos_token_id=tok.end_id if eos == "end" else 2, bos_token_id=tok.start_id, pad_token_id=tok.end_id)
  cfg = transformers.CLIPConfig(text_config=text, vision_config=dict(tower, image_size=32, patch_size=8),
                                projection_dim=24)
  torch.manual_seed(0)
  theirs = transformers.CLIPModel(cfg).eval()
  with torch.no_grad():  # LayerNorm affine away from (1, 0), so a dropped or swapped norm shows
    for name, p in theirs.named_parameters():
      if "norm" in name:
        p.add_(torch.randn_like(p) * 0.3)
  theirs.save_pretrained(str(tmp_path))
  ours = clip_weights.load(str(tmp_path))

  pixels = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
  ids = [tok.encode(t) for t in _TEXTS[:4]]
  rows = np.full((len(ids), 24), tok.end_id, np.int64)
  for r, row in enumerate(ids):
    rows[r, :len(row)] = row
  with torch.no_grad():
    want_image = theirs.get_image_features(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)))
    want_text = theirs.get_text_features(input_ids=torch.from_numpy(rows))
    want_image = getattr(want_image, "pooler_output", want_image).numpy()
    want_text = getattr(want_text, "pooler_output", want_text).numpy()
  got_image = np.asarray(ours.image_features(jnp.asarray(pixels)))
  got_text = np.asarray(ours.text_features(jnp.asarray(rows.astype(np.int32))))
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  errors = {"image": _relative_error(got_image, want_image), "text": _relative_error(got_text, want_text),
            "cosine": float(np.max(np.abs(unit(got_image) @ unit(got_text).T - unit(want_image) @ unit(want_text).T)))}
  print(f"parity ({hidden_act}, {eos}): {errors}")
  assert errors["image"] <= _PARITY_TOL and errors["text"] <= _PARITY_TOL and errors["cosine"] <= _PARITY_TOL, errors


@pytest.mark.reference
@pytest.mark.parametrize("height, width", [(96, 128), (20, 28)])
def test_preprocessing_against_transformers_image_processor(tmp_path, height, width):
  """vdit resizes to cover and crops in one resample; transformers resizes the shortest side, then
  crops whole pixels. Measured on a toy frame shrunk or enlarged to a 32 px model: the pixel
  difference, and what it does to the image embedding and to the frame's score with a concept."""
  _, transformers = _reference()
  model = _tiny_model(tmp_path, seed=2)
  clip_weights.save(model, str(tmp_path))
  scorer = clip_frames.ConceptScorer(str(tmp_path), ("red",))
  frame = world.render_clip("red", "square", "left", start=(height / 2, width / 2), speed=0.5, radius=height / 5,
                            num_frames=1, height=height, width=width)[0]
  ours = scorer.pixels(frame[None])
  backends = ["CLIPImageProcessorPil"] + (["CLIPImageProcessor"] if importlib.util.find_spec("torchvision") else [])
  for backend in backends:  # the default CLIPImageProcessor runs on torchvision, when it is installed
    processor = getattr(transformers, backend)(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    theirs = np.asarray(processor(images=[frame], return_tensors="np")["pixel_values"]).transpose(0, 2, 3, 1)
    levels = np.abs(ours - theirs) * np.asarray(clip_frames.STD) * 255  # back in 0-255 levels
    embedded = [scorer.image_embeddings(p)[0] for p in (ours, theirs)]
    scores = [float(e @ scorer.text_pd[0]) for e in embedded]
    print(f"{height}x{width} {backend}: pixel difference max {levels.max():.1f}/255, mean {levels.mean():.2f}/255; "
          f"embedding cosine {float(embedded[0] @ embedded[1]):.5f}; score {scores[0]:.4f} vs {scores[1]:.4f}")
    assert float(embedded[0] @ embedded[1]) > 0.99 and abs(scores[0] - scores[1]) < 0.02
