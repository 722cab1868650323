"""Defaults shared by every experiment config; each config file starts from `default_config()`.

Keys documented here are the whole schema: configs are locked, so a typo in an override or a
config file is an error rather than a silently ignored setting.
"""
import ml_collections

from vdit.config.upgrade import VERSION
from vdit.text.tokenizer import Tokenizer


def parse_args(arg: str | None, **defaults) -> dict:
  """Parses 'a=1,b=x' config arguments over `defaults`; an unknown name is an error."""
  values = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in defaults:
      raise ValueError(f"Unknown config argument {item!r}; valid arguments: {sorted(defaults)} (as name=value).")
    values[key] = value
  return values


def loop_settings(train: ml_collections.ConfigDict) -> None:
  """The `train` keys vdit.training.loop reads, shared by every trainer's schema (DiT, VAE)."""
  train.log_every = 50
  train.checkpoint_every = 1000  # the VAE trainer also exports WORKDIR/vae.safetensors at each
  train.keep_checkpoints = 3
  train.async_checkpoint = True
  # A step whose loss or gradient norm is not finite: stop (default: nothing more is written; exit
  # non-zero naming the step and the last good checkpoint) | skip (the update is dropped and counted;
  # stop after max_consecutive_skips in a row).
  train.nonfinite = "stop"
  train.max_consecutive_skips = 10
  train.restore_step = 0  # 0: resume from the newest readable checkpoint; N: from step N exactly


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # The on-disk format of a workdir's config.json; vdit/config/upgrade.py upgrades older ones.
  c.config_version = VERSION
  c.seed = 0

  # Mesh axis sizes; one -1 fills the remaining devices. Rules map logical names to these axes
  # (vdit/parallel/sharding.py): batch over data x fsdp, parameters over fsdp (embed) and tensor (heads,
  # MLP), video tokens over context (sequence parallelism; see model.context_parallel).
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "context": 1, "tensor": 1})
  # Multi-slice (TPU slices, or one process per GPU host): slices along each axis, joined by the
  # data-centre network. All 1: one slice. Otherwise c.mesh is the shape within one slice and each
  # axis spans mesh x dcn_mesh devices, e.g. {"data": 2} for data parallelism across two slices.
  c.dcn_mesh = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "context": 1, "tensor": 1})

  c.data = ml_collections.ConfigDict()
  c.data.dir = ""  # prepared shards (data_prep); required
  c.data.num_frames = 8  # longest training clip (random temporal crop); 0: each bucket's full length
  # Per-bucket batch size = tokens_per_batch // tokens per clip (rounded to the batch devices);
  # 0: global_batch_size for every bucket.
  c.data.tokens_per_batch = 0
  c.data.image_ratio = -1.0  # share of steps from 1-frame buckets; -1: by clip count like videos
  c.data.worker_count = 0  # Grain worker processes (0: in-process)
  c.data.prefetch = 2

  # How data_prep.ingest turns video/image files into the bucketed shards above.
  c.ingest = ml_collections.ConfigDict()
  c.ingest.fps = 8.0  # every clip is resampled to this frame rate
  c.ingest.sizes = ("64x64", "48x80", "80x48")  # HEIGHTxWIDTH buckets; nearest aspect ratio wins
  c.ingest.frame_counts = (8, 16)  # video clip lengths; stills are 1-frame clips
  c.ingest.max_clips_per_segment = 4  # clips taken from one scene (scenes split at cuts)
  c.ingest.scene_threshold = 0.25  # mean |frame difference| in [0, 1] that starts a new scene
  c.ingest.min_motion = 0.002  # clips whose mean frame difference is below this are static: dropped
  c.ingest.max_upscale = 2.0  # sources needing more upscaling than this are dropped (too_small)
  c.ingest.max_crop_fraction = 0.5  # sources losing more area to the crop are dropped
  c.ingest.codec = "jpeg"  # per-frame storage: jpeg | webp | png | raw
  c.ingest.quality = 90  # jpeg/webp quality
  c.ingest.allow_missing_captions = False  # keep uncaptioned files with an empty caption
  c.ingest.files_per_shard = 32  # input files per job; each job writes one shard per bucket

  c.model = ml_collections.ConfigDict()
  c.model.in_channels = 3
  c.model.patch_size = (1, 2, 2)
  c.model.dim = 256
  c.model.depth = 4
  c.model.num_heads = 4
  c.model.mlp_ratio = 4.0
  c.model.rope_theta = 10000.0
  # Architecture (vdit/model/dit.py VARIANTS): vdit | wan (Wan 2.1's DiT exactly: QK RMSNorm across
  # heads, SiLU timestep MLP; import weights with `python -m vdit.convert --from=wan2.1`).
  c.model.variant = "vdit"
  # A few-step student (`python -m vdit.distill`): the DiT also sees each step's length and samples
  # with the mean-flow update; set by vdit.distill, not by hand.
  c.model.interval_conditioning = False
  c.model.prediction = "velocity"  # velocity | x (network outputs the clean video) | x_skip (see model/factory.py)
  # What the backward pass keeps per block (vdit/model/dit.py REMAT_POLICIES): none | full | dots
  # (matmul-with-weights outputs) | dots_all (all matmul outputs) | dots_attention (dots + attention
  # outputs, fused kernels' included) | offload_dots (dots, in host memory) | offload_carry (as full,
  # with each block's input in host memory: the least accelerator memory; see the README fit table).
  c.model.remat = "none"
  c.model.scan_layers = True  # lax.scan over blocks (compile time flat in depth); False: unrolled loop
  # Local attention kernel, any sequence length: xla (dense scores; any platform) | blockwise (online
  # softmax in JAX, O(N) memory, forward-mode differentiable; any platform) | cudnn (NVIDIA GPU flash
  # attention) | splash (TPU Pallas flash attention). A shape a kernel cannot take is an error.
  c.model.attention = "xla"
  # Self-attention when mesh.context > 1: none (XLA gathers keys) | ulysses (all-to-all over heads;
  # heads per tensor shard divisible by mesh.context) | ring (k/v blocks passed around the context axis).
  c.model.context_parallel = "none"
  # Clean conditioning frames (image-to-video, extension, connect, loop) enter with a per-frame mask
  # channel and per-frame timesteps; train.conditioning sets how often training shows them.
  c.model.frame_conditioning = False
  c.model.dtype = "float32"  # compute dtype
  c.model.param_dtype = "float32"

  # Latent space: a VAE weights file (vdit.vae.wan_vae format: a trained configs/vae_*.py workdir's
  # vae.safetensors, or a converted Wan 2.1 VAE). "": the DiT works on pixels. With a VAE, data.dir
  # must be a latent cache made with that file (python -m data_prep.cache_latents); sampling decodes
  # with it. model.in_channels is the VAE's z_dim; sample sizes stay in pixels.
  c.latent = ml_collections.ConfigDict({"vae": ""})

  c.text = ml_collections.ConfigDict()
  # trainable: the built-in encoder over the shipped tokenizer, trained with the DiT.
  # t5: a frozen T5/umT5 encoder (HF safetensors directory `t5_path`, sentencepiece `tokenizer_path`);
  # training reads its embeddings from the latent cache (data_prep.cache_latents --t5=...), sampling
  # runs it. text.dim is then the encoder's d_model and text.max_length its padded length.
  c.text.encoder = "trainable"
  c.text.t5_path = ""
  c.text.tokenizer_path = ""
  c.text.vocab_size = Tokenizer.shipped_vocab_size()  # the trainable encoder's table: the shipped tokenizer's size
  c.text.max_length = 32
  c.text.dim = 256
  c.text.depth = 2
  c.text.num_heads = 4
  c.text.mlp_ratio = 4.0
  # Learned absolute position embeddings on the trainable encoder's tokens: with depth=0 they are
  # what tells "a red circle ... and a blue square" from "a blue circle ... and a red square".
  c.text.positions = False
  c.text.caption_dropout = 0.1  # probability of training on the empty caption (enables CFG)

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.timestep_sampling = "logit_normal"  # logit_normal | uniform
  c.diffusion.logit_mean = 0.0
  c.diffusion.logit_std = 1.0
  c.diffusion.shift = 0.0  # 0: from the token count (resolution-aware); else a fixed shift

  c.optim = ml_collections.ConfigDict()
  c.optim.peak_lr = 1e-4
  c.optim.end_lr_fraction = 0.1
  c.optim.warmup_steps = 1000
  c.optim.weight_decay = 0.01
  c.optim.b1 = 0.9
  c.optim.b2 = 0.99
  c.optim.clip_norm = 1.0
  c.optim.ema_decay = 0.999

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 100_000
  c.train.global_batch_size = 64
  # Microbatches per step: gradients summed over k sequential microbatches, one update (the
  # activation memory of batch / k). Each device's rows of every bucket batch must divide by k.
  c.train.grad_accum_steps = 1
  # Logged MFU = model FLOP/s (vdit/training/flops.py) / (devices x this peak); 0: the device kind's dense
  # bf16 peak where known (TPU v4-v6e, A100, H100/H200, B200), else only TFLOP/s is logged.
  c.train.peak_tflops_per_device = 0.0
  loop_settings(c.train)
  c.train.sample_every = 0  # 0: no sample videos during training
  # With model.frame_conditioning: how often each conditioning strategy is drawn per clip
  # (relative weights; vdit/diffusion/conditioning.py), and the most frames first_k/last_k give.
  c.train.conditioning = ml_collections.ConfigDict(
      {"none": 0.4, "first": 0.2, "first_last": 0.1, "first_k": 0.1, "last_k": 0.1, "random": 0.1})
  c.train.conditioning_max_frames = 4

  # Periodic evaluation during training (vdit.eval.evaluator on the EMA weights): an eval config
  # file (configs/evals/NAME.py[:args]) and overrides of its keys ("reference_dir=DIR,kid.subset_size=8").
  # Metrics go to TensorBoard/metrics.jsonl as eval/NAME; pages to WORKDIR/eval/NAME.
  c.eval = ml_collections.ConfigDict({"every_steps": 0, "config": "", "overrides": ""})

  # A few-step student (`python -m vdit.distill`, vdit/training/distill_step.py): the teacher workdir
  # it was distilled from, the guidance scale folded into it (0: the teacher's sample.cfg), and the
  # share of training clips that take a step to an earlier time (the rest match the velocity).
  # dmd_weight > 0 adds a distribution-matching regulariser (DMD): a fake-score network trained on
  # the student's one-step samples beside it (vdit/training/distill_step.py).
  c.distill = ml_collections.ConfigDict({"teacher": "", "guidance": 0.0, "mean_fraction": 0.5, "dmd_weight": 0.0})

  # LoRA fine-tuning (`python -m vdit.finetune`, vdit/model/lora.py): adapters of this rank on the
  # target layers (groups self_attn, cross_attn, mlp, attention, all, or layer names such as
  # "self_attn.query"), scaled by alpha / rank (alpha 0: rank), input dropout; rank 0: none. The frozen
  # base is the workdir finetune.base at checkpoint finetune.base_step; only adapters train and are saved.
  c.lora = ml_collections.ConfigDict({"rank": 0, "alpha": 0.0, "targets": ("self_attn", "cross_attn", "mlp"),
                                      "dropout": 0.0})
  c.finetune = ml_collections.ConfigDict({"base": "", "base_step": 0})

  c.sample = ml_collections.ConfigDict()
  c.sample.sampler = "euler"  # euler | heun | dpmpp_2m | unipc (second order at one call per step; unipc adds a corrector)
  c.sample.steps = 30
  c.sample.cfg = 5.0
  c.sample.shift = 0.0  # 0: from the token count
  c.sample.negative_prompt = ""
  c.sample.guidance_interval = (0.0, 1.0)  # guidance only at times t in [low, high] (t=1 is noise)
  # Modes with conditioning frames (image-to-video, extension, connect, loop, long): a separate
  # guidance scale for the frames, cfg then guiding the text alone (a third pass); 0: off.
  c.sample.frame_cfg = 0.0
  # Training-free caching (vdit/diffusion/caching.py): none | cfg (guidance difference reused between
  # full guided steps) | block (the network's output reused while its input barely moves).
  c.sample.cache = "none"
  # Default size of generated videos; 0: the data's most common video bucket (at training length).
  c.sample.num_frames = 0
  c.sample.height = 0
  c.sample.width = 0
  c.sample.prompts = ("a red circle moving left",)
  return c
