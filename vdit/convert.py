"""Converts released weights to vdit: a DiT weights file, or a whole Wan 2.1 release to a workdir.

  python -m vdit.convert --from=wan2.1 --input=DIR_OR_FILE [--config=config.json] --output=dit.safetensors
  python -m vdit.convert --from=wan2.1 --input=Wan2.1-T2V-1.3B-Diffusers --workdir=runs/wan_1p3b
"""
from absl import flags

from vdit.core import command
from vdit.core.errors import UserError


def define_flags():
  flags.DEFINE_string("from", "wan2.1", "Which release's layout --input has (vdit.interop.wan.dit_weights.SOURCES).")
  command.define_path("input", None, "Diffusers transformer weights: a .safetensors file or a directory of them.",
                      kind="any", required=True)
  command.define_path("config", None, "Its diffusers config.json (default: INPUT/config.json).")
  flags.DEFINE_string("output", None, "Output .safetensors (vdit DiT names).")
  flags.DEFINE_string("workdir", None, "Instead of --output: --input is a diffusers pipeline folder (transformer/, "
                      "vae/, text_encoder/, tokenizer/); write a vdit workdir that vdit.sample uses.")


def main(f):
  if bool(f.output) == bool(f.workdir):
    raise UserError("Give exactly one of --output (a DiT weights file) or --workdir (a whole pipeline -> a "
                    "workdir for vdit.sample).")
  source = f["from"].value  # `from` is a Python keyword
  from vdit.interop.wan import dit_weights
  if source not in dit_weights.SOURCES:
    raise UserError(f"--from={source!r} is not a known source; choose one of {', '.join(dit_weights.SOURCES)}.")
  if f.workdir:
    from vdit.interop.wan import workdir as wan_workdir
    wan_workdir.build(f.input, f.workdir)
    print(wan_workdir.describe(f.workdir))
    print(f"Sample: python -m vdit.sample --workdir={f.workdir} --prompt=\"...\" --out={f.workdir}/samples")
    return
  overrides = dit_weights.convert(source, f.input, f.config, f.output)
  print(f"Wrote {f.output}. Build the matching model with these config values:")
  for key, value in overrides.items():
    print(f"  --config.{key}={value}")


if __name__ == "__main__":
  command.run(main, define_flags)
