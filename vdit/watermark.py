"""Detects vdit's invisible watermark in files (vdit.media.watermark).

  python -m vdit.watermark detect FILE [FILE ...]     # prints a verdict and score per file
"""
import sys

from vdit.media.watermark import detect


def main(argv: list[str]) -> int:
  if len(argv) < 2 or argv[0] != "detect":
    print("usage: python -m vdit.watermark detect FILE [FILE ...]", file=sys.stderr)
    return 2
  from vdit.media import video_reader
  status = 0
  for path in argv[1:]:
    try:
      marked, value = detect(video_reader.read_video(path))
    except video_reader.VideoReadError as e:
      print(f"{path}\terror\t{e}")
      status = 1
      continue
    print(f"{path}\t{'watermarked' if marked else 'clean'}\tscore={value:.2f}")
  return status


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
