"""Checks where files came from: their C2PA manifest (vdit.media.c2pa_manifest) and vdit's invisible
watermark (vdit.media.watermark); makes a local development signing chain.

  python -m vdit.provenance verify FILE [FILE ...]   # manifest validity and content + watermark verdict
  python -m vdit.provenance detect FILE [FILE ...]   # the watermark detector alone
  python -m vdit.provenance keygen DIR               # DIR/key.pem + DIR/chain.pem for --c2pa_key/--c2pa_cert

Prints one tab-separated line per file: PATH, then for `verify` the manifest (c2pa=valid|trusted|
invalid|none, its failure codes, generator, digital source type, parameters) and the watermark
(watermarked|clean, score); for `detect` watermarked|clean and the score. A manifest's
signingCredential.untrusted failure means its certificate chain is not on the reader's trust list
(expected for a private CA). A file that cannot be read prints PATH, error and the reason, is named
in the error line on stderr, and the exit status is then 2.

`keygen` writes a fresh local development CA and signer (vdit.media.c2pa_dev_chain, valid for a
year): DIR/key.pem (mode 0600) and DIR/chain.pem, creating DIR if needed, and prints their paths.
The chain is made on this machine and is on no one's trust list, so verifiers report
signingCredential.untrusted: it is for trying signing out; to publish, sign with a key from a real
CA. It never replaces an existing key.pem or chain.pem (exit 2, nothing changed).
"""
from vdit.core import command
from vdit.core.errors import UserError

_USAGE = "verify|detect FILE [FILE ...] | keygen DIR"


def _watermark(path) -> str:
  from vdit.media import video_reader
  from vdit.media.watermark import detect
  marked, value = detect(video_reader.read_video(path))
  return f"{'watermarked' if marked else 'clean'}\tscore={value:.2f}"


def _verify(path) -> str:
  from vdit.media import c2pa_manifest
  found = c2pa_manifest.read(path)
  return f"{c2pa_manifest.summary(found)}\t{_watermark(path)}"


def _keygen(directory: str):
  from vdit.media import c2pa_dev_chain
  problem = command.output_dir_problem(directory)
  if problem:
    raise UserError(f"keygen DIR: {problem}")
  key, chain = c2pa_dev_chain.write_chain(directory)
  print(f"{key}\tprivate key (mode 0600): --c2pa_key={key}")
  print(f"{chain}\tsigner certificate, then the CA's (valid {c2pa_dev_chain.VALID_DAYS} days): --c2pa_cert={chain}")
  print("note: a local development CA made on this machine and trusted by no one else: verifiers report "
        "signingCredential.untrusted; to publish, sign with a key and chain from a real CA.", flush=True)


def main(f, args: list[str]):
  del f
  if args[:1] == ["keygen"] and len(args) == 2:
    return _keygen(args[1])
  if len(args) < 2 or args[0] not in ("verify", "detect"):
    raise UserError(f"expected `{_USAGE}`, got {' '.join(args) or 'nothing'}; "
                    "e.g. python -m vdit.provenance verify out/000.mp4")
  check = _verify if args[0] == "verify" else _watermark
  unreadable = []
  for path in args[1:]:
    try:
      print(f"{path}\t{check(path)}", flush=True)
    except UserError as e:  # video_reader.VideoReadError, c2pa_manifest.ManifestReadError
      print(f"{path}\terror\t{e}", flush=True)
      unreadable.append(str(e))
  if unreadable:
    raise UserError(f"{len(unreadable)} of {len(args) - 1} files could not be read ({'; '.join(unreadable)}); "
                    "pass video or image files.")


if __name__ == "__main__":
  command.run(main, positional=_USAGE)
