"""Fine-tunes Wan 2.1's causal video VAE (temporal x4, spatial x8, 16 latent channels) on GPU/TPU.

Launch (convert the diffusers VAE once, e.g. from Wan-AI/Wan2.1-T2V-1.3B-Diffusers/vae):
  python -m vdit.interop.wan.vae_weights --input=vae/diffusion_pytorch_model.safetensors \
      --config=vae/config.json --output=runs/wan21_vae.safetensors
  python -m vdit.main --config=configs/vae_wan21.py --workdir=runs/vae_wan21 \
      --config.data.dir=DATA --config.vae.init_weights=runs/wan21_vae.safetensors

The architecture keys are WanVAEConfig's defaults, which a converted Wan 2.1 file must match (a
mismatch is an error naming the keys). Arguments (`--config=configs/vae_wan21.py:steps=5000`):
steps.

Loss knobs (vdit/training/vae_losses.py): reconstruction `loss.l1_weight` / `loss.l2_weight`; KL to
N(0, I) `loss.kl_weight` (tiny: keeps the latent scale near the pretrained one); perceptual
`loss.perceptual_weight` with `loss.perceptual_weights` = a frozen frame network in the toy-features
format (python -m vdit.eval.train_toy_features; trained on toy data, so for real video train one on
it first; 0 disables); adversarial `loss.adversarial_weight`
(hinge, 3D patch discriminator `disc.*`, trained from scratch from `loss.adversarial_start_step`;
start it once reconstructions have settled, e.g. after a few thousand steps; 0 disables).
"""
from configs import base
from vdit.training import vae_config


def get_config(arg: str | None = None):
  args = base.parse_args(arg, steps=20000)
  config = vae_config.default_config()  # vae.* defaults are Wan 2.1's architecture
  config.data.dir = ""  # required: a prepared dataset (data_prep.ingest)
  config.data.num_frames = 17  # 1 + 4 * 4: latents [5, H/8, W/8, 16]
  config.data.worker_count = 4

  config.vae.init_weights = ""  # set to the converted Wan 2.1 VAE to fine-tune (else: from scratch)
  config.vae.latent_stats_batches = 32

  config.loss.l1_weight = 1.0
  config.loss.l2_weight = 0.0
  config.loss.kl_weight = 1e-6
  config.loss.perceptual_weight = 0.0
  config.loss.perceptual_weights = ""
  config.loss.adversarial_weight = 0.0  # e.g. 0.1 with adversarial_start_step=5000
  config.loss.adversarial_start_step = 5000
  config.disc.base_dim = 64
  config.disc.num_layers = 3
  config.disc.optim.peak_lr = 2e-5

  # Fine-tuning: a small learning rate, so the latent space stays close to the pretrained one.
  config.optim.peak_lr = 1e-5
  config.optim.warmup_steps = 500
  config.optim.weight_decay = 0.0
  config.optim.ema_decay = 0.999

  config.train.num_steps = int(args["steps"])
  config.train.global_batch_size = 8
  config.train.log_every = 50
  config.train.checkpoint_every = 1000
  config.train.cpu_fast_compile = False
  config.lock()
  return config
