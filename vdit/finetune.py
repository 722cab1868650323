"""LoRA fine-tuning of a trained workdir, and merging adapters into a new one.

  python -m vdit.finetune --base=runs/toy --workdir=runs/toy_purple [--config=configs/finetune_toy.py] \
      [--config.data_dir=runs/purple_data --config.num_steps=300 ...]
  python -m vdit.sample --workdir=runs/toy --lora=runs/toy_purple/adapter.safetensors[:SCALE] --prompt=...
  python -m vdit.finetune merge --base=runs/toy --lora=runs/toy_purple/adapter.safetensors[:SCALE] \
      --workdir=runs/toy_merged

Training: the base (any DiT workdir: pixel or latent, vdit or Wan 2.1 converted) stays frozen and is
never written; adapters of config rank/alpha on the target layers learn from the settings' data,
sharded and resumable like training (rerun the same command). Checkpoints hold the adapters and
their optimizer state only. At the end WORKDIR/adapter.safetensors holds the EMA adapters in the
diffusers/PEFT convention (vdit/interop/wan/lora_weights.py), which `vdit.sample --lora`, diffusers'
`load_lora_weights` and PEFT read. Without --config the settings of vdit/config/finetune.py apply.

merge: the base's config and its weights with each adapter (repeat --lora; FILE:SCALE) added in,
written as a new workdir that samples without --lora.
"""
import os

from absl import flags
from ml_collections import config_flags

from vdit.core import command
from vdit.core.errors import UserError

ADAPTER_FILE = "adapter.safetensors"


def define_flags():
  command.define_path("base", None, "The base: a trained workdir (vdit.main, or a converted Wan 2.1 release).",
                      kind="dir", required=True)
  command.define_output_dir("workdir", None, "The fine-tuning workdir (rerun to resume), or with merge the "
                            "merged workdir (must be new).", required=True)
  config_flags.DEFINE_config_file("config", None, "Fine-tuning settings file (configs/finetune_toy.py); default: "
                                  "vdit/config/finetune.py's.", lock_config=True)
  flags.DEFINE_multi_string("lora", None, "merge: an adapter FILE[:SCALE] (repeatable).")


def main(f, args: list[str]):
  from vdit.core import logs
  from vdit.parallel import distributed
  if args not in ([], ["merge"]):
    raise UserError(f"unexpected argument(s) {' '.join(args)}; the one subcommand is `merge`.")
  if os.path.abspath(f.base) == os.path.abspath(f.workdir):
    raise UserError(f"--workdir={f.workdir} is the base's workdir, which is never written; give a new directory.")
  logs.quiet_library_logs()
  if args == ["merge"]:
    return merge(f)
  if f.lora:
    raise UserError("--lora is for `merge` (and vdit.sample); training takes --config settings.")
  distributed.maybe_initialize()
  train(f)


def train(f):
  import jax
  from vdit.config import config_io, experiment, finetune, pretrained
  from vdit.interop.wan import lora_weights
  from vdit.model import lora
  from vdit.training import dit_trainer
  base = config_io.load(f.base)  # a directory that is no workdir is one error line
  settings = f.config or finetune.default_settings()
  base_step = _pinned_base_step(f.workdir) or settings.base_step or None
  base_frozen = experiment.freeze(config_io.for_inference(base))
  with pretrained.Checkpoints(f.base, base_frozen, _sampling_mesh()) as checkpoints:
    base_step, = checkpoints.select(base_step)  # checked against the base's config before any training
  config = finetune.finetune_config(base, f.base, settings, base_step)
  state = dit_trainer.train_and_evaluate(config, f.workdir, base=dit_trainer.Base(f.base, base_frozen, base_step))
  if jax.process_index() == 0:
    lora_cfg = config.lora
    path = os.path.join(f.workdir, ADAPTER_FILE)
    lora_weights.save(path, jax.device_get(state["ema"]), rank=lora_cfg.rank, alpha=lora_cfg.alpha or lora_cfg.rank,
                      layers=lora.resolve_targets(lora_cfg.targets))
    print(f"Wrote {path} ({os.path.getsize(path) / 2**20:.2f} MiB, EMA adapters at step {int(state['step'])}).")


def _pinned_base_step(workdir: str) -> int | None:
  """The base step a fine-tuning run in `workdir` started on (resuming keeps it), or None."""
  from vdit.config import config_io
  if not os.path.exists(os.path.join(workdir, config_io.CONFIG_FILE)):
    return None
  return config_io.load(workdir).finetune.base_step or None


def _sampling_mesh():
  from vdit.parallel import sharding
  return sharding.make_mesh({"data": -1})


def merge(f):
  import jax
  from vdit.config import config_io, pretrained
  from vdit.core import checkpoint as ckpt_lib
  from vdit.interop.wan import lora_weights
  if not f.lora:
    raise UserError("merge needs at least one --lora=FILE[:SCALE].")
  if os.path.exists(os.path.join(f.workdir, config_io.CONFIG_FILE)):
    raise UserError(f"--workdir={f.workdir} already holds a model; merge into a new directory.")
  specs = [lora_weights.parse_spec(s) for s in f.lora]
  config = pretrained.load_config(f.base)
  mesh = _sampling_mesh()
  with pretrained.Checkpoints(f.base, config, mesh) as checkpoints:
    step, = checkpoints.select(None)
    params = checkpoints.restore(step)
  params = lora_weights.apply(params, specs)
  checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(f.workdir), async_save=False)
  checkpointer.save_weights(step, params, meta={
      "model_signature": config_io.model_signature(config),
      "source": {"base": os.path.abspath(f.base), "base_step": int(step),
                 "lora": [{"file": os.path.abspath(p), "scale": s} for p, s in specs]}})
  checkpointer.close()
  config_io.save(config_io.load(f.base), f.workdir)  # last: a workdir with config.json is complete
  if jax.process_index() == 0:
    print(f"Wrote {f.workdir}: {f.base} step {step} with {len(specs)} adapter(s) merged in.")


if __name__ == "__main__":
  command.run(main, define_flags, positional="[merge]")
