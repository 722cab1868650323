"""Detects vdit's invisible watermark in files (vdit.media.watermark).

  python -m vdit.watermark detect FILE [FILE ...]     # prints a verdict and score per file

Prints one tab-separated line per file (PATH, watermarked|clean|error, score or reason); a file that
cannot be read is also named in the error line on stderr, and the exit status is then 2.
"""
from vdit.core import command
from vdit.core.errors import UserError

_USAGE = "detect FILE [FILE ...]"


def main(f, args: list[str]):
  del f
  if len(args) < 2 or args[0] != "detect":
    raise UserError(f"expected `{_USAGE}`, got {' '.join(args) or 'nothing'}; "
                    "e.g. python -m vdit.watermark detect out/000.mp4")
  from vdit.media import video_reader
  from vdit.media.watermark import detect
  unreadable = []
  for path in args[1:]:
    try:
      marked, value = detect(video_reader.read_video(path))
    except video_reader.VideoReadError as e:
      print(f"{path}\terror\t{e}")
      unreadable.append(str(e))
      continue
    print(f"{path}\t{'watermarked' if marked else 'clean'}\tscore={value:.2f}")
  if unreadable:
    raise UserError(f"{len(unreadable)} of {len(args) - 1} files could not be read ({'; '.join(unreadable)}); "
                    "pass video or image files.")


if __name__ == "__main__":
  command.run(main, positional=_USAGE)
