"""Converts released weights to vdit: a DiT weights file, or a whole Wan 2.1 release to a workdir.

  python -m vdit.convert --from=wan2.1 --input=DIR_OR_FILE [--config=config.json] --output=dit.safetensors
  python -m vdit.convert --from=wan2.1 --input=Wan2.1-T2V-1.3B-Diffusers --workdir=runs/wan_1p3b
"""
from vdit.interop.wan.dit_weights import SOURCES, convert


def main(argv):
  del argv
  f = flags.FLAGS
  if bool(f.output) == bool(f.workdir):
    raise app.UsageError("Give exactly one of --output (a DiT weights file) or --workdir (a whole pipeline -> "
                         "a workdir for vdit.sample).")
  if f.workdir:
    from vdit.interop.wan import workdir as wan_workdir
    from vdit.core.errors import exit_on_user_error
    exit_on_user_error(lambda: wan_workdir.build(f.input, f.workdir), ValueError)
    print(wan_workdir.describe(f.workdir))
    print(f"Sample: python -m vdit.sample --workdir={f.workdir} --prompt=\"...\" --out={f.workdir}/samples")
    return
  overrides = convert(f["from"].value, f.input, f.config, f.output)
  print(f"Wrote {f.output}. Build the matching model with these config values:")
  for key, value in overrides.items():
    print(f"  --config.{key}={value}")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  # Flags live here, not at import, so importing the converter defines no global flags.
  flags.DEFINE_enum("from", "wan2.1", SOURCES, "which release's layout --input has.")
  flags.DEFINE_string("input", None, "diffusers transformer weights: a .safetensors file or a directory of them.",
                      required=True)
  flags.DEFINE_string("config", None, "its diffusers config.json (default: INPUT/config.json).")
  flags.DEFINE_string("output", None, "output .safetensors (vdit DiT names).")
  flags.DEFINE_string("workdir", None, "instead of --output: --input is a diffusers pipeline folder (transformer/, "
                      "vae/, text_encoder/, tokenizer/); write a vdit workdir that vdit.sample uses.")
  app.run(main)
