"""Sampling entry point: latest checkpoint of a workdir -> videos, a contact sheet and index.jsonl.

  python -m vdit.sample --workdir=runs/toy --prompt="a red circle moving left" --out=runs/toy/samples
  python -m vdit.sample --workdir=runs/toy --prompts=prompts.txt --out=OUT --steps=30 --cfg=4

The model config comes from the workdir's config.json; EMA weights are used unless --noema.
Writes OUT/NNN.mp4 and OUT/NNN.gif per prompt, OUT/contact_sheet.png (rows: prompts, columns:
frames) and OUT/index.jsonl with one JSON object per video (paths relative to OUT).

Safety (vdit/safety, --safety_policy): prompts, their expanded captions and conditioning inputs are
checked before any compute, each video before it is written. A blocked video is reported in one
line, nothing of it is written, its index.jsonl record has no paths, and the rest of the batch
still runs; the exit status is then 4 (0 when nothing was blocked, 2 for a user error). Written
files carry a signed C2PA manifest with --c2pa_key and --c2pa_cert (check with `python -m
vdit.provenance verify FILE...`).
"""
import json
import os
import sys

from absl import flags

from vdit.core import command
from vdit.core.errors import UserError


def define_flags():
  command.define_path("workdir", None, "Training workdir (config.json + checkpoints/).", kind="dir", required=True)
  flags.DEFINE_multi_string("prompt", None, "A prompt; repeat the flag for several.")
  command.define_path("prompts", None, "A text file with one prompt per line.")
  command.define_output_dir("out", None, "Output directory (created if missing).", required=True)
  # Seeds become uint32 keys after offsets (+ i per video, + 1000 per window of a long video).
  flags.DEFINE_integer("seed", 0, "Seed of the first video; video i uses seed + i.", lower_bound=0,
                       upper_bound=2**31 - 1)
  flags.DEFINE_integer("steps", None, "Denoising steps (default: the config's sample.steps).", lower_bound=1)
  flags.DEFINE_float("cfg", None, "Classifier-free guidance scale (default: the config's sample.cfg).")
  flags.DEFINE_float("frame_cfg", None, "With conditioning frames (--image, --video, --connect, --loop, long "
                     "videos): a separate guidance scale for the frames; --cfg then guides the text alone.")
  flags.DEFINE_enum("cache", None, ["none", "cfg", "block"], "Training-free caching (vdit/diffusion/caching.py): "
                    "cfg reuses the guidance difference between full guided steps, block reuses the network's "
                    "output while its input barely moves (default: the config's sample.cache).")
  flags.DEFINE_string("sampler", None, "ODE sampler, a name in vdit.diffusion.samplers.SAMPLERS (default: the "
                      "config's); dpmpp_2m is DPM-Solver++(2M).")
  flags.register_validator("sampler", _known_sampler)
  flags.DEFINE_list("guidance_interval", None, "LOW,HIGH: apply guidance only at times t in [LOW, HIGH] (1 = "
                    "noise; default: the config's sample.guidance_interval).")
  flags.DEFINE_float("shift", None, "Timestep shift; 0 = resolution-aware (default: the config's).",
                     lower_bound=0.0)
  flags.DEFINE_string("negative_prompt", None, "Negative prompt for guidance (default: the config's).")
  flags.DEFINE_integer("num_frames", None, "Frames per video (default: the config's sample.num_frames).",
                       lower_bound=1)
  flags.DEFINE_integer("height", None, "Height in pixels (default: the training size).", lower_bound=1)
  flags.DEFINE_integer("width", None, "Width in pixels (default: the training size).", lower_bound=1)
  flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step to load (default: the latest).")
  flags.DEFINE_bool("ema", True, "Use the EMA weights (--noema for the raw weights).")
  flags.DEFINE_integer("batch_size", 16, "Videos generated per forward batch.", lower_bound=1)
  flags.DEFINE_integer("fps", 8, "Frames per second of the written videos.", lower_bound=1)
  flags.DEFINE_integer("scale", 4, "Integer upscale of the written videos (toy frames are tiny).", lower_bound=1)

  flags.DEFINE_string("image", None, "Image-to-video: the first frame (an image or video file).")
  flags.DEFINE_string("video", None, "A video to extend (with --extend).")
  flags.DEFINE_enum("extend", None, ["forward", "backward"], "Extend --video forward or backward in time.")
  flags.DEFINE_integer("extend_frames", None, "Frames of the given video kept as context when extending, and "
                       "the overlap of a long video's windows (default: half the window).", lower_bound=1)
  flags.DEFINE_list("connect", None, "A,B: a transition from the end of video A to the start of B.")
  flags.DEFINE_bool("loop", False, "Make a video that plays on repeat without a jump: a text-to-video "
                    "clip, then frames bridging its end back to its start (--extend_frames of each end given).")
  flags.DEFINE_string("edit", None, "Video-to-video editing (SDEdit) of this file under the prompt.")
  flags.DEFINE_float("strength", 0.6, "With --edit: noise level in [0, 1] (0 keeps the video, 1 ignores it).",
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_enum("expand", "none", ["none", "toy", "command"], "Prompt expansion before encoding: none, the "
                    "toy grammar's rules, or --expand_command (prompt on stdin, caption on stdout).")
  flags.DEFINE_string("expand_command", "", "With --expand=command: the program and its arguments.")
  flags.DEFINE_float("expand_timeout", 30.0, "Seconds the expander may take per prompt.")
  flags.register_validator("expand_timeout", lambda s: s > 0, "must be > 0 seconds")
  flags.DEFINE_bool("watermark", False, "Embed vdit's invisible watermark in every frame (check files with "
                    "`python -m vdit.provenance verify FILE...`).")
  flags.DEFINE_string("safety_policy", "", "Safety policy JSON (schema: vdit/safety/policy.py; default: "
                      "configs/safety/default.json); `none` turns every check off, with a warning.")
  flags.DEFINE_enum("c2pa", "auto", ["auto", "on", "off"], "C2PA manifests on every written file: on needs "
                    "--c2pa_key and --c2pa_cert; auto signs when they are given and warns when not; off warns.")
  command.define_path("c2pa_key", None, "PEM private key that signs the C2PA manifests.")
  command.define_path("c2pa_cert", None, "PEM certificate chain of --c2pa_key (signing certificate first).")
  flags.DEFINE_multi_string("lora", None, "A LoRA adapter FILE[:SCALE] merged into the weights (diffusers/PEFT "
                            "safetensors, e.g. from vdit.finetune); repeat for several, each with its scale.")
  flags.DEFINE_integer("total_frames", None, "A video longer than the model's window, made by repeated "
                       "extension with overlap.", lower_bound=1)


def _known_sampler(name) -> bool:
  if name is None:
    return True
  from vdit.diffusion.samplers import SAMPLERS  # imports jax: only when the flag is given
  if name not in SAMPLERS:
    raise flags.ValidationError(f"{name!r} is not a sampler; choose one of {', '.join(SAMPLERS)}")
  return True


class UsageError(UserError):
  """Flags that do not make a sampling run together."""


def resolve_mode(f) -> tuple[str, dict]:
  """The sampling mode from the flags, and its inputs (recorded in index.jsonl); input files are
  checked to exist here, before any model work."""
  mode, inputs = _mode(f)
  for flag, paths in (("image", [f.image]), ("video", [f.video]), ("connect", f.connect or []), ("edit", [f.edit])):
    for path in filter(None, paths):
      if not os.path.isfile(path):
        problem = "is a directory" if os.path.isdir(path) else "no such file"
        raise UsageError(f"Cannot use {path} (--{flag}): {problem}; pass an existing video or image file.")
  return mode, inputs


def _mode(f) -> tuple[str, dict]:
  chosen = {"image": f.image, "extend": f.video or f.extend, "connect": f.connect,
            "loop": f.loop, "edit": f.edit, "long": f.total_frames}
  given = [name for name, value in chosen.items() if value]
  if len(given) > 1:
    raise UsageError(f"Choose one mode; got {', '.join('--' + g for g in given)}.")
  if not given:
    return "text", {}
  name = given[0]
  if name == "extend":
    if not (f.video and f.extend):
      raise UsageError("Extending needs both --video=FILE and --extend=forward|backward.")
    return f"extend_{f.extend}", {"video": f.video, "extend_frames": f.extend_frames}
  if name == "connect":
    if len(f.connect) != 2:
      raise UsageError(f"--connect takes two videos A,B; got {f.connect}.")
    return "connect", {"connect": list(f.connect)}
  if name == "edit":
    return "edit", {"video": f.edit, "strength": f.strength}
  if name == "long":
    return "long", {"total_frames": f.total_frames, "extend_frames": f.extend_frames}
  if name == "image":
    return "image", {"image": f.image}
  return "loop", {"extend_frames": f.extend_frames}


def _adapter_specs(values) -> list[tuple[str, float]]:
  """--lora values -> [(file, scale)], each file checked to exist (before any model work)."""
  from vdit.interop.wan.lora_weights import parse_spec
  specs = [parse_spec(v) for v in values or []]
  for path, _ in specs:
    if not os.path.isfile(path):
      raise UsageError(f"Cannot use --lora={path}: no such file; pass an adapter .safetensors file[:SCALE].")
  return specs


def _safety_and_signing(f):
  """The run's safety Review and C2PA credentials (or None), both checked before any compute."""
  from vdit.safety.sampling import Review
  review = Review.from_flag(f.safety_policy)
  keys = bool(f.c2pa_key) + bool(f.c2pa_cert)
  if f.c2pa == "off" and keys:
    raise UsageError("--c2pa=off contradicts --c2pa_key/--c2pa_cert; drop one of them.")
  if (f.c2pa == "on" or keys) and keys < 2:
    raise UsageError("C2PA signing needs both --c2pa_key=KEY.pem and --c2pa_cert=CHAIN.pem (or --c2pa=off).")
  if keys < 2:
    why = "--c2pa=off" if f.c2pa == "off" else "no --c2pa_key/--c2pa_cert given"
    print(f"warning: files are written without C2PA manifests ({why}).", file=sys.stderr)
    return review, None
  from vdit.media import c2pa_manifest
  return review, c2pa_manifest.load_credentials(f.c2pa_key, f.c2pa_cert)


def _prompt_verdicts(review, inputs, prompts, captions) -> list:
  """One safety decision per prompt: a blocked conditioning input blocks them all."""
  shared = review.check_inputs(inputs)
  return [shared if shared.blocked else review.check_prompt(p, c) for p, c in zip(prompts, captions)]


def read_prompts(prompt_flags, prompts_file) -> list[str]:
  """Prompts from flags or file, non-empty (their length is checked against the tokenizer by
  check_prompts, once the model's config is known)."""
  if bool(prompt_flags) == bool(prompts_file):
    raise UsageError("Give prompts with --prompt=\"...\" (repeatable) or --prompts=FILE, exactly one of them.")
  if prompts_file:
    if not os.path.isfile(prompts_file):
      raise UsageError(f"Prompts file {prompts_file!r} does not exist; pass a text file with one prompt per line.")
    try:
      with open(prompts_file, encoding="utf-8-sig") as f:  # -sig: a BOM (Windows editors) is not prompt text
        prompts = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as e:
      raise UsageError(f"Prompts file {prompts_file!r} is not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x}); "
                       "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).") from None
    except OSError as e:
      raise UsageError(f"Cannot read prompts file {prompts_file!r}: {e.strerror}; pass a readable text file.") from None
    if not prompts:
      raise UsageError(f"Prompts file {prompts_file!r} holds no prompts; write one prompt per line.")
  else:
    prompts = [p.strip() for p in prompt_flags]
  for i, p in enumerate(prompts):
    if not p:
      raise UsageError(f"Prompt {i + 1} is empty; describe the video you want (e.g. \"a red circle moving left\").")
  return prompts


def check_prompts(prompts, tokenizer) -> None:
  for p in prompts:
    tokenizer.encode_batch([p])  # raises PromptError naming the prompt if it is too long


def check_size(space, patch, sizes) -> None:
  """UsageError unless the model makes videos of these pixel sizes: `sizes` is [(flag name, value,
  given as a flag)] for frames, height, width. The patch must divide the size the model sees: the
  pixels, or for a latent model the VAE's latents (1 + (T - 1) / tf frames, height and width / sf)."""
  tf, sf = space.temporal_factor, space.spatial_factor
  bad, fixes = [], []
  for i, ((name, value, given), p) in enumerate(zip(sizes, patch)):
    # Valid sizes are first + k * step, k >= 0: the patch's multiples mapped back to pixels.
    first, step = (1 + tf * (p - 1), tf * p) if i == 0 else (sf * p, sf * p)
    if value >= first and (value - first) % step == 0:
      continue
    rule = f"a multiple of {step}" if first == step else f"{first} + {step}k"
    below = first + (value - first) // step * step
    where = "--" if given else "the workdir config's sample."
    bad.append(f"{where}{name}={value} is not {rule}")
    fixes.append(f"--{name}={f'{below} or {below + step}' if below >= first else first}")
  if bad:
    over = f" over VAE latents (1 + (T - 1)/{tf} frames, sides / {sf})" if space.is_latent else ""
    raise UsageError(f"{', '.join(bad[:-1]) + ' and ' if len(bad) > 1 else ''}{bad[-1]}, which the model's patch "
                     f"{tuple(patch)}{over} needs; use {', '.join(fixes)}.")


def _guidance_interval(f, sample_config) -> tuple[float, float]:
  if f.guidance_interval is None:
    return tuple(float(v) for v in sample_config.guidance_interval)
  try:
    low, high = (float(v) for v in f.guidance_interval)
  except ValueError:
    raise UsageError(f"--guidance_interval={','.join(f.guidance_interval)} must be two numbers LOW,HIGH.") from None
  if not 0.0 <= low <= high <= 1.0:
    raise UsageError(f"--guidance_interval={low},{high} must satisfy 0 <= LOW <= HIGH <= 1.")
  return low, high


def _sizes(f, mode, config, space) -> tuple[int, int, int, int]:
  """num_frames, height, width (flags, else the config's sample size) and the model's window of
  frames, checked against the model's patch and the mode's frame counts."""
  s = config.sample
  num_frames = s.num_frames if f.num_frames is None else f.num_frames
  height = s.height if f.height is None else f.height
  width = s.width if f.width is None else f.width
  # Text-to-image: a model with temporal patches of pt frames makes pt frames (images were trained
  # as repeated frames); the first is the image.
  window = space.pixel_size(config.model.patch_size[0], 1, 1)[0] if num_frames == 1 else num_frames
  check_size(space, config.model.patch_size, [("num_frames", window, f.num_frames is not None),
                                              ("height", height, f.height is not None),
                                              ("width", width, f.width is not None)])
  if mode == "long" and f.total_frames <= num_frames:
    raise UsageError(f"--total_frames={f.total_frames} must exceed the window num_frames={num_frames}; for a "
                     "video that short, leave --total_frames out.")
  from vdit.diffusion.modes import context_limits  # numpy and PyAV only: still before JAX
  default, lowest, highest = context_limits(mode, window)
  context = f.extend_frames or default
  if mode in ("extend_forward", "extend_backward", "long", "loop") and not lowest <= context <= highest:
    raise UsageError(f"--extend_frames={context} must be between {lowest} and {highest} for --{mode.split('_')[0]} "
                     f"at num_frames={window}; lower it or raise --num_frames.")
  return num_frames, height, width, window


def main(f):
  # Before any heavy import: a bad combination of flags, a missing input or prompts file costs nothing.
  mode, mode_inputs = resolve_mode(f)
  prompts = read_prompts(f.prompt, f.prompts)
  adapters = _adapter_specs(f.lora)
  review, credentials = _safety_and_signing(f)
  from vdit.core import logs
  from vdit.parallel import distributed
  logs.quiet_library_logs()
  distributed.maybe_initialize()
  import jax
  from tqdm import tqdm

  from vdit.config import pretrained
  from vdit.vae import latents
  from vdit.parallel import sharding
  from vdit.model import factory
  from vdit.text import prompt_expansion
  from vdit.diffusion import modes as sample_modes
  from vdit.diffusion.generation import VideoSampler
  from vdit.diffusion.options import SampleOptions
  from vdit.text import conditioner

  config = pretrained.load_config(f.workdir)
  if config.lora.rank:
    raise UserError(f"{f.workdir} is a LoRA fine-tuning workdir (adapters only); sample its base with "
                    f"--workdir={config.finetune.base} --lora={os.path.join(f.workdir, 'adapter.safetensors')}, or "
                    "merge them (python -m vdit.finetune merge).")
  s = config.sample
  space = latents.from_config(config)  # a missing VAE file fails before any model work
  num_frames, height, width, window = _sizes(f, mode, config, space)  # checked before any weights are read
  guidance_interval = _guidance_interval(f, s)
  from vdit.diffusion import caching
  from vdit.diffusion.modes import FRAME_MODES
  config_frame_cfg = (s.frame_cfg or None) if mode in FRAME_MODES else None  # only modes with frames use it
  error = caching.mode_error(f.cache or s.cache, frame_cfg=config_frame_cfg if f.frame_cfg is None else f.frame_cfg)
  if error:
    raise UserError(f"--{error}")
  if config.model.interval_conditioning:
    extra = [flag for flag, value in (("--cfg", f.cfg not in (None, 1.0)), ("--frame_cfg", f.frame_cfg is not None),
                                      ("--sampler", f.sampler not in (None, "", "euler")),
                                      ("--cache=cfg", f.cache == "cfg")) if value]
    if extra:
      raise UserError(f"{f.workdir} is a few-step student with its teacher's guidance distilled in (scale "
                      f"{config.distill.guidance:g}) and mean-flow steps; sample it without {', '.join(extra)}.")
  mesh = sharding.make_mesh({"data": -1})
  tokenizer = conditioner.for_sampling(config, mesh)
  check_prompts(prompts, tokenizer)
  # Expanded before any model work, so a failing expander costs nothing and writes nothing.
  expander = prompt_expansion.make_expander(f.expand, f.expand_command, f.expand_timeout)
  captions = [expander(p) for p in prompts]
  tokenizer.encode_batch(captions)  # an over-long expansion is a PromptError naming it
  negative = s.negative_prompt if f.negative_prompt is None else f.negative_prompt
  tokenizer.encode_batch([negative])
  inputs = {"image": [f.image], "video": [f.video], "edit": [f.edit], "connect": f.connect or []}
  verdicts = _prompt_verdicts(review, inputs, prompts, captions)  # before any model work
  kept = [i for i, v in enumerate(verdicts) if not v.blocked]
  if not kept:  # everything blocked: no weights read, nothing made
    if jax.process_index() == 0:
      write_outputs(f, prompts, [f.seed + i for i in range(len(prompts))], {}, step=None, verdicts=verdicts,
                    opts=dict(mode=mode, inputs=mode_inputs, captions=captions))
    return 4

  with pretrained.Checkpoints(f.workdir, config, mesh) as checkpoints:
    step, = checkpoints.select(f.checkpoint_step)
    params = checkpoints.restore(step, ema=f.ema)
  if adapters:
    from vdit.interop.wan import lora_weights
    params = lora_weights.apply(params, adapters)
  graphdef, _ = factory.abstract_model(config)

  opts = dict(num_frames=window, height=height, width=width, channels=3 if space.is_latent else config.model.in_channels,
              patch_size=config.model.patch_size,
              **SampleOptions.from_section(s, steps=f.steps, cfg=f.cfg, sampler=f.sampler or None,
                                           shift=f.shift, negative_prompt=negative,
                                           guidance_interval=guidance_interval,
                                           frame_cfg=f.frame_cfg, cache=f.cache).generate_kwargs())

  sampler = VideoSampler(graphdef, params, tokenizer, mesh=mesh, space=space)
  seeds = [f.seed + i for i in range(len(prompts))]
  todo_captions, todo_seeds = [captions[i] for i in kept], [seeds[i] for i in kept]  # blocked: never made
  videos, passes = [], []
  for start in range(0, len(kept), f.batch_size):
    chunk = slice(start, start + f.batch_size)
    progress = lambda it, n=start: tqdm(it, desc=f"denoising videos {n + 1}-{min(n + f.batch_size, len(kept))}",
                                         disable=jax.process_index() > 0)
    sampler.network_passes = 0
    videos.extend(sample_modes.run(mode, sampler, todo_captions[chunk], todo_seeds[chunk], opts, progress=progress,
                                   **{k: v for k, v in mode_inputs.items() if v is not None}))
    # Per video: a chunk's videos share every step (and cache decision), so its average is each one's.
    passes += [sampler.network_passes / (len(videos) - len(passes))] * (len(videos) - len(passes))
  if num_frames == 1:
    videos = [v[:1] for v in videos]
  videos = _check_videos(review, kept, videos, verdicts)
  if f.watermark:
    from vdit.media import watermark
    videos = {i: watermark.embed(v) for i, v in videos.items()}

  if jax.process_index() == 0:
    opts = dict(opts, num_frames=num_frames, mode=mode, inputs=mode_inputs, captions=captions, passes=dict(zip(kept, passes)),
                lora=[{"file": os.path.abspath(p), "scale": scale} for p, scale in adapters])
    write_outputs(f, prompts, seeds, videos, step=step, opts=opts, verdicts=verdicts, credentials=credentials,
                  c2pa_prompt=review.c2pa_prompt)
  return 4 if any(v.blocked for v in verdicts) else 0


def _check_videos(review, kept, videos, verdicts) -> dict:
  """The frame checks on each made video: {prompt index: frames to write (blurred where the policy
  says)}; a blocked one is left out and its verdict replaced."""
  from vdit.safety import decision
  written = {}
  for i, video in zip(kept, videos):
    verdict, frames = review.check_video(video)
    verdicts[i] = decision.worst([verdict, verdicts[i]])
    if not verdict.blocked:
      written[i] = frames
  return written


def write_outputs(f, prompts, seeds, videos, *, step, opts, verdicts, credentials=None, c2pa_prompt=True):
  """Writes the videos ({prompt index: frames}) and index.jsonl, one record per prompt: blocked ones
  with their safety decision and no paths."""
  from vdit.media import provenance
  from vdit.media import video_io
  from vdit.safety import sampling as safety
  out, workdir = f.out, f.workdir
  os.makedirs(out, exist_ok=True)
  records = []
  for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
    safety.report(i, prompt, verdicts[i])
    if i not in videos:
      records.append({"prompt": prompt, "caption": opts["captions"][i], "seed": seed, "mode": opts["mode"],
                      "inputs": opts["inputs"], "safety": verdicts[i].record()})
      continue
    video = videos[i]
    tags = provenance.tags(prompt=prompt, caption=opts["captions"][i], seed=seed, mode=opts["mode"],
                           checkpoint_step=int(step), workdir=workdir, watermarked=f.watermark)
    seal = _sealer(credentials, tags, c2pa_prompt)
    if video.shape[0] == 1:  # text-to-image
      media = {"path": f"{i:03d}.png"}
      scaled = video[0].repeat(f.scale, axis=0).repeat(f.scale, axis=1)
      video_io.write_png(os.path.join(out, media["path"]), scaled, metadata=tags, seal=seal(".png"))
    else:
      media = {"path": f"{i:03d}.mp4", "gif": f"{i:03d}.gif"}
      video_io.write_mp4(os.path.join(out, media["path"]), video, fps=f.fps, scale=f.scale,
                         metadata=tags, seal=seal(".mp4"))
      video_io.write_gif(os.path.join(out, media["gif"]), video, fps=f.fps, scale=f.scale,
                         metadata=tags, seal=seal(".gif"))
    records.append({"prompt": prompt, "caption": opts["captions"][i], **media, "seed": seed, "mode": opts["mode"],
                    "safety": verdicts[i].record(),
                    "inputs": opts["inputs"], "frames": int(video.shape[0]), "steps": opts["steps"],
                    "cfg": opts["cfg"], "sampler": opts["sampler"], "shift": opts["shift"],
                    "negative_prompt": opts["negative_prompt"],
                    "guidance_interval": list(opts["guidance_interval"]), "frame_cfg": opts["frame_cfg"],
                    "cache": opts["cache"], "network_passes": opts["passes"][i],
                    "num_frames": opts["num_frames"],
                    "height": opts["height"], "width": opts["width"], "checkpoint_step": int(step),
                    "workdir": os.path.abspath(workdir), "ema": f.ema, "lora": opts["lora"],
                    "config_hash": tags["config_hash"], "vdit_version": tags["vdit_version"]})
  if videos:
    # Signed too (every PNG vdit writes carries a manifest); no prompt or seed: it shows several videos.
    sheet = {"generator": "vdit", "vdit_version": provenance.version(), "config_hash": provenance.config_hash(workdir),
             "checkpoint_step": str(int(step)), "mode": opts["mode"]}
    video_io.write_png(os.path.join(out, "contact_sheet.png"),
                       video_io.contact_sheet(list(videos.values()), max_frames=16),
                       seal=_sealer(credentials, sheet, c2pa_prompt)(".png"))
  tmp = os.path.join(out, "index.jsonl.tmp")
  with open(tmp, "w", encoding="utf-8") as index:
    for r in records:
      index.write(json.dumps(r, ensure_ascii=False) + "\n")
  os.replace(tmp, os.path.join(out, "index.jsonl"))
  blocked = len(records) - len(videos)
  print(f"Wrote {len(videos)} videos{f' ({blocked} blocked)' if blocked else ''}, "
        f"{'contact_sheet.png and ' if videos else ''}index.jsonl to {os.path.abspath(out)}")


def _sealer(credentials, tags, c2pa_prompt):
  """Per file suffix: the C2PA seal for vdit.media.video_io, or None without credentials."""
  if credentials is None:
    return lambda suffix: None
  from vdit.media import c2pa_manifest
  definition = c2pa_manifest.manifest(tags, include_prompt=c2pa_prompt)
  return lambda suffix: c2pa_manifest.sealer(credentials, definition, c2pa_manifest.MIME[suffix])


if __name__ == "__main__":
  command.run(main, define_flags)
