"""Sampling entry point: latest checkpoint of a workdir -> videos, a contact sheet and index.jsonl.

  python -m vdit.sample --workdir=runs/toy --prompt="a red circle moving left" --out=runs/toy/samples
  python -m vdit.sample --workdir=runs/toy --prompts=prompts.txt --out=OUT --steps=30 --cfg=4

The model config comes from the workdir's config.json; EMA weights are used unless --noema.
Writes OUT/NNN.mp4 and OUT/NNN.gif per prompt, OUT/contact_sheet.png (rows: prompts, columns:
frames) and OUT/index.jsonl with one JSON object per video (paths relative to OUT).
"""
import json
import os

from absl import app, flags

from vdit.parallel import distributed
from vdit.core import logs
from vdit.diffusion.samplers import SAMPLERS

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints/).")
_PROMPT = flags.DEFINE_multi_string("prompt", None, "A prompt; repeat the flag for several.")
_PROMPTS = flags.DEFINE_string("prompts", None, "A text file with one prompt per line.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the first video; video i uses seed + i.")
_STEPS = flags.DEFINE_integer("steps", None, "Denoising steps (default: the config's sample.steps).")
_CFG = flags.DEFINE_float("cfg", None, "Classifier-free guidance scale (default: the config's sample.cfg).")
_FRAME_CFG = flags.DEFINE_float("frame_cfg", None, "With conditioning frames (--image, --video, "
                                "--connect, --loop, long videos): a separate guidance scale for the "
                                "frames; --cfg then guides the text alone.")
_SAMPLER = flags.DEFINE_enum("sampler", None, list(SAMPLERS),
                             "ODE sampler (default: the config's); dpmpp_2m is DPM-Solver++(2M).")
_INTERVAL = flags.DEFINE_list("guidance_interval", None,
                              "LOW,HIGH: apply guidance only at times t in [LOW, HIGH] (1 = noise; "
                              "default: the config's sample.guidance_interval).")
_SHIFT = flags.DEFINE_float("shift", None, "Timestep shift; 0 = resolution-aware (default: the config's).")
_NEGATIVE = flags.DEFINE_string("negative_prompt", None, "Negative prompt for guidance (default: the config's).")
_FRAMES = flags.DEFINE_integer("num_frames", None, "Frames per video (default: the config's sample.num_frames).")
_HEIGHT = flags.DEFINE_integer("height", None, "Height in pixels (default: the training size).")
_WIDTH = flags.DEFINE_integer("width", None, "Width in pixels (default: the training size).")
_STEP = flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step to load (default: the latest).")
_EMA = flags.DEFINE_bool("ema", True, "Use the EMA weights (--noema for the raw weights).")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Videos generated per forward batch.")
_FPS = flags.DEFINE_integer("fps", 8, "Frames per second of the written videos.")
_SCALE = flags.DEFINE_integer("scale", 4, "Integer upscale of the written videos (toy frames are tiny).")


_IMAGE = flags.DEFINE_string("image", None, "Image-to-video: the first frame (an image or video file).")
_VIDEO = flags.DEFINE_string("video", None, "A video to extend (with --extend).")
_EXTEND = flags.DEFINE_enum("extend", None, ["forward", "backward"], "Extend --video forward or backward in time.")
_EXTEND_FRAMES = flags.DEFINE_integer(
    "extend_frames", None, "Frames of the given video kept as context when extending, and the "
    "overlap of a long video's windows (default: half the window).")
_CONNECT = flags.DEFINE_list("connect", None, "A,B: a transition from the end of video A to the start of B.")
_LOOP = flags.DEFINE_bool("loop", False, "Make a video whose last frame leads back to its first.")
_EDIT = flags.DEFINE_string("edit", None, "Video-to-video editing (SDEdit) of this file under the prompt.")
_STRENGTH = flags.DEFINE_float("strength", 0.6, "With --edit: noise level in [0, 1] (0 keeps the video, 1 ignores it).")
_EXPAND = flags.DEFINE_enum("expand", "none", ["none", "toy", "command"],
                            "Prompt expansion before encoding: none, the toy grammar's rules, or "
                            "--expand_command (prompt on stdin, caption on stdout).")
_EXPAND_COMMAND = flags.DEFINE_string("expand_command", "", "With --expand=command: the program and its arguments.")
_EXPAND_TIMEOUT = flags.DEFINE_float("expand_timeout", 30.0, "Seconds the expander may take per prompt.")
_WATERMARK = flags.DEFINE_bool("watermark", False, "Embed vdit's invisible watermark in every frame "
                               "(check files with `python -m vdit.watermark detect FILE...`).")
_TOTAL = flags.DEFINE_integer("total_frames", None, "A video longer than the model's window, made by "
                              "repeated extension with overlap.")


class UsageError(ValueError):
  pass


def resolve_mode() -> tuple[str, dict]:
  """The sampling mode from the flags, and its inputs (recorded in index.jsonl)."""
  chosen = {"image": _IMAGE.value, "extend": _VIDEO.value or _EXTEND.value, "connect": _CONNECT.value,
            "loop": _LOOP.value, "edit": _EDIT.value, "long": _TOTAL.value}
  given = [name for name, value in chosen.items() if value]
  if len(given) > 1:
    raise UsageError(f"Choose one mode; got {', '.join('--' + g for g in given)}.")
  if not given:
    return "text", {}
  name = given[0]
  if name == "extend":
    if not (_VIDEO.value and _EXTEND.value):
      raise UsageError("Extending needs both --video=FILE and --extend=forward|backward.")
    return f"extend_{_EXTEND.value}", {"video": _VIDEO.value, "extend_frames": _EXTEND_FRAMES.value}
  if name == "connect":
    if len(_CONNECT.value) != 2:
      raise UsageError(f"--connect takes two videos A,B; got {_CONNECT.value}.")
    return "connect", {"connect": list(_CONNECT.value)}
  if name == "edit":
    return "edit", {"video": _EDIT.value, "strength": _STRENGTH.value}
  if name == "long":
    return "long", {"total_frames": _TOTAL.value, "extend_frames": _EXTEND_FRAMES.value}
  if name == "image":
    return "image", {"image": _IMAGE.value}
  return "loop", {}


def read_prompts(prompt_flags, prompts_file, tokenizer) -> list[str]:
  """Prompts from flags or file, validated: non-empty, within the tokenizer's length."""
  if bool(prompt_flags) == bool(prompts_file):
    raise UsageError("Give prompts with --prompt=\"...\" (repeatable) or --prompts=FILE, exactly one of them.")
  if prompts_file:
    if not os.path.isfile(prompts_file):
      raise UsageError(f"Prompts file {prompts_file!r} does not exist; pass a text file with one prompt per line.")
    with open(prompts_file, encoding="utf-8") as f:
      prompts = [line.strip() for line in f if line.strip()]
    if not prompts:
      raise UsageError(f"Prompts file {prompts_file!r} holds no prompts; write one prompt per line.")
  else:
    prompts = [p.strip() for p in prompt_flags]
  for i, p in enumerate(prompts):
    if not p:
      raise UsageError(f"Prompt {i + 1} is empty; describe the video you want (e.g. \"a red circle moving left\").")
    tokenizer.encode_batch([p])  # raises PromptError naming the prompt if it is too long
  return prompts


def _guidance_interval(sample_config) -> tuple[float, float]:
  if _INTERVAL.value is None:
    # Workdirs from before guidance intervals existed lack the key: guidance at every step.
    return tuple(float(v) for v in sample_config.get("guidance_interval", (0.0, 1.0)))
  try:
    low, high = (float(v) for v in _INTERVAL.value)
  except ValueError:
    raise UsageError(f"--guidance_interval={','.join(_INTERVAL.value)} must be two numbers LOW,HIGH.") from None
  if not 0.0 <= low <= high <= 1.0:
    raise UsageError(f"--guidance_interval={low},{high} must satisfy 0 <= LOW <= HIGH <= 1.")
  return low, high


def run(argv_flags=None):
  import jax
  from tqdm import tqdm

  from vdit.core import checkpoint as ckpt_lib
  from vdit.config import config_io
  from vdit.vae import latents
  from vdit.parallel import sharding
  from vdit.model import factory
  from vdit.text import prompt_expansion
  from vdit.diffusion import modes as sample_modes
  from vdit.diffusion.generation import VideoSampler
  from vdit.text import conditioner

  config = config_io.for_inference(config_io.load(_WORKDIR.value))
  s = config.sample
  space = latents.from_config(config)  # a missing VAE file fails before any model work
  mesh = sharding.make_mesh({"data": -1})
  tokenizer = conditioner.for_sampling(config, mesh)
  prompts = read_prompts(_PROMPT.value, _PROMPTS.value, tokenizer)
  # Expanded before any model work, so a failing expander costs nothing and writes nothing.
  expander = prompt_expansion.make_expander(_EXPAND.value, _EXPAND_COMMAND.value, _EXPAND_TIMEOUT.value)
  captions = [expander(p) for p in prompts]
  tokenizer.encode_batch(captions)  # an over-long expansion is a PromptError naming it
  negative = s.negative_prompt if _NEGATIVE.value is None else _NEGATIVE.value
  tokenizer.encode_batch([negative])

  checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(_WORKDIR.value), read_only=True)
  step = _STEP.value if _STEP.value is not None else checkpointer.latest_step()
  if step is None:
    raise ckpt_lib.CheckpointError(f"No checkpoint in {checkpointer.directory}; train first with vdit.main.")
  if step not in checkpointer.all_steps():
    raise ckpt_lib.CheckpointError(f"No checkpoint for step {step}; available: {checkpointer.all_steps()}.")
  saved = checkpointer.read_meta(step).get("model_signature", {})
  if saved != config_io.model_signature(config):
    raise ckpt_lib.CheckpointError(f"Checkpoint step {step} does not match {_WORKDIR.value}/config.json: "
                                   f"{ckpt_lib.describe_mismatch(saved, config_io.model_signature(config))}.")

  graphdef, _ = factory.abstract_model(config)
  target = factory.abstract_params(config, mesh)
  params = checkpointer.restore_item(step, "ema" if _EMA.value else "params", target)
  checkpointer.close()

  mode, mode_inputs = resolve_mode()
  num_frames = _FRAMES.value or s.num_frames
  height, width = _HEIGHT.value or s.height, _WIDTH.value or s.width
  if mode == "long" and mode_inputs["total_frames"] <= num_frames:
    raise UsageError(f"--total_frames={mode_inputs['total_frames']} must exceed the window "
                     f"num_frames={num_frames}; for a video that short, leave --total_frames out.")
  # Text-to-image: a model with temporal patches of pt frames makes pt frames (images were trained
  # as repeated frames); the first is the image.
  window = space.pixel_size(config.model.patch_size[0], 1, 1)[0] if num_frames == 1 else num_frames
  opts = dict(num_frames=window, height=height, width=width, channels=3 if space.is_latent else config.model.in_channels,
              patch_size=config.model.patch_size, steps=_STEPS.value or s.steps,
              cfg=s.cfg if _CFG.value is None else _CFG.value, sampler=_SAMPLER.value or s.sampler,
              shift=s.shift if _SHIFT.value is None else _SHIFT.value, negative_prompt=negative,
              guidance_interval=_guidance_interval(s), frame_cfg=_FRAME_CFG.value)
  sampler = VideoSampler(graphdef, params, tokenizer, mesh=mesh, space=space)
  seeds = [_SEED.value + i for i in range(len(prompts))]
  videos = []
  for start in range(0, len(prompts), _BATCH.value):
    chunk = slice(start, start + _BATCH.value)
    progress = lambda it, n=start: tqdm(it, desc=f"denoising videos {n + 1}-{min(n + _BATCH.value, len(prompts))}",
                                         disable=jax.process_index() > 0)
    videos.extend(sample_modes.run(mode, sampler, captions[chunk], seeds[chunk], opts, progress=progress,
                                   **{k: v for k, v in mode_inputs.items() if v is not None}))
  if num_frames == 1:
    videos = [v[:1] for v in videos]
  if _WATERMARK.value:
    from vdit.media import watermark
    videos = [watermark.embed(v) for v in videos]

  if jax.process_index() == 0:
    opts = dict(opts, num_frames=num_frames, mode=mode, inputs=mode_inputs, captions=captions)
    write_outputs(_OUT.value, prompts, seeds, videos, step=step, workdir=_WORKDIR.value, opts=opts)


def write_outputs(out, prompts, seeds, videos, *, step, workdir, opts):
  from vdit.media import provenance
  from vdit.media import video_io
  os.makedirs(out, exist_ok=True)
  records = []
  for i, (prompt, seed, video) in enumerate(zip(prompts, seeds, videos)):
    tags = provenance.tags(prompt=prompt, caption=opts["captions"][i], seed=seed, mode=opts["mode"],
                           checkpoint_step=int(step), workdir=workdir, watermarked=_WATERMARK.value)
    if video.shape[0] == 1:  # text-to-image
      media = {"path": f"{i:03d}.png"}
      scaled = video[0].repeat(_SCALE.value, axis=0).repeat(_SCALE.value, axis=1)
      video_io.write_png(os.path.join(out, media["path"]), scaled, metadata=tags)
    else:
      media = {"path": f"{i:03d}.mp4", "gif": f"{i:03d}.gif"}
      video_io.write_mp4(os.path.join(out, media["path"]), video, fps=_FPS.value, scale=_SCALE.value,
                         metadata=tags)
      video_io.write_gif(os.path.join(out, media["gif"]), video, fps=_FPS.value, scale=_SCALE.value,
                         metadata=tags)
    records.append({"prompt": prompt, "caption": opts["captions"][i], **media, "seed": seed, "mode": opts["mode"],
                    "inputs": opts["inputs"], "frames": int(video.shape[0]), "steps": opts["steps"],
                    "cfg": opts["cfg"], "sampler": opts["sampler"], "shift": opts["shift"],
                    "negative_prompt": opts["negative_prompt"],
                    "guidance_interval": list(opts["guidance_interval"]), "frame_cfg": opts["frame_cfg"],
                    "num_frames": opts["num_frames"],
                    "height": opts["height"], "width": opts["width"], "checkpoint_step": int(step),
                    "workdir": os.path.abspath(workdir), "ema": _EMA.value,
                    "config_hash": tags["config_hash"], "vdit_version": tags["vdit_version"]})
  video_io.write_png(os.path.join(out, "contact_sheet.png"), video_io.contact_sheet(list(videos), max_frames=16))
  tmp = os.path.join(out, "index.jsonl.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  os.replace(tmp, os.path.join(out, "index.jsonl"))
  print(f"Wrote {len(records)} videos, contact_sheet.png and index.jsonl to {os.path.abspath(out)}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value or not _OUT.value:
    raise app.UsageError("--workdir and --out are required.")
  logs.quiet_library_logs()
  distributed.maybe_initialize()
  from vdit.core.errors import exit_on_user_error
  exit_on_user_error(run, UsageError)


if __name__ == "__main__":
  app.run(main)
