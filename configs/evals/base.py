"""The schema and defaults of evaluation configs (`vdit.evaluate --eval=configs/evals/NAME.py`).

An eval config says what to sample and how to score it; the model comes from the workdir.
"""
import ml_collections


def default_eval_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "eval"  # outputs go to WORKDIR/eval/NAME unless --out is given
  c.seed = 0  # video i uses seed + i; validation noise and KID subsets derive from it too

  # Prompts: "toy" (vdit.toy.prompts: held-out + seen combinations of the reference's toy
  # world), "reference" (captions of the first reference clips), or a text file, one per line.
  c.prompts = "reference"
  c.num_prompts = 64  # with prompts="reference"
  c.toy_prompts = ml_collections.ConfigDict({"num_seen": 8, "repeats": 2})

  # Real clips (a prepared data dir: data_prep.ingest or toy_world) for FVD/FID/KID, reference
  # statistics and the validation loss. Clips are drawn from every bucket by `seed`.
  c.reference_dir = ""
  c.num_reference = 256

  # Feature networks, weights by path: "toy" (vdit.eval.toy_features: video, frame and text
  # features) or "i3d" (vdit.eval.i3d: video features for FVD; converted with vdit.eval.i3d_convert).
  c.features = ml_collections.ConfigDict({"kind": "toy", "path": "", "batch_size": 64})
  # Text-video alignment encoders ("toy" or "" for none); "" path: the features' file.
  c.alignment = ml_collections.ConfigDict({"kind": "toy", "path": ""})

  c.metrics = ml_collections.ConfigDict({
      "fvd": True, "fid": True, "kid": True, "alignment": True, "toy_adherence": True,
      "temporal": True, "val_loss": True})
  c.kid = ml_collections.ConfigDict({"subset_size": 100, "num_subsets": 50})
  c.val = ml_collections.ConfigDict({"timesteps": (0.1, 0.3, 0.5, 0.7, 0.9), "num_clips": 64,
                                     "batch_size": 16})

  # Sampling; 0 / -1 / "": the workdir config's sample settings.
  # cache: "" = the model's sample.cache, else none | cfg | block (vdit/diffusion/caching.py).
  c.sample = ml_collections.ConfigDict({"steps": 0, "cfg": -1.0, "sampler": "", "cache": "", "batch_size": 32})
  c.gallery = ml_collections.ConfigDict({"max_videos": 64, "fps": 8, "scale": 4})
  # A safety policy file (vdit/safety/policy.py; e.g. configs/safety/toy_no_red.json) run over the
  # prompts and the generated videos: block/flag rates per category in results.json. "": off.
  c.safety = ml_collections.ConfigDict({"policy": ""})
  return c
