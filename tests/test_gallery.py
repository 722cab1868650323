"""Tests for vdit.eval.plots and vdit.eval.gallery: PNGs, escaped offline HTML, and real playback.

The browser tests (marked `browser`) open the gallery in headless Chromium: chromium and chromedriver
on PATH (Debian: `apt-get install chromium chromium-driver`), else they skip saying so (as on CI).
"""
import html.parser
import os
import shutil
import time
import urllib.parse

import numpy as np
from PIL import Image
import pytest

from vdit.media import video_io
from vdit.eval import gallery, plots

_NASTY_PROMPT = 'a red <script>alert("x")</script> circle & "friends" moving left'
_PLAY_TIMEOUT_S = 30


def _clip(colour, num_frames=8, size=32):
  """A colour square sliding right on a dark background: uint8 [T, size, size, 3]."""
  frames = np.full((num_frames, size, size, 3), 20, np.uint8)
  for t in range(num_frames):
    frames[t, 10:22, 2 + 2 * t:14 + 2 * t] = colour
  return frames


def _write_videos(step_dir, specs):
  """Writes each (prompt, colour) as videos/NNN.webm (VP9) and .mp4 (H.264); returns video dicts."""
  videos = []
  for i, (prompt, colour) in enumerate(specs):
    frames = _clip(colour)
    webm, mp4 = f"videos/{i:03d}.webm", f"videos/{i:03d}.mp4"
    video_io.write_video(os.path.join(step_dir, webm), frames.repeat(2, 1).repeat(2, 2), fps=8,
                         codec="libvpx-vp9", container="webm")
    video_io.write_mp4(os.path.join(step_dir, mp4), frames, fps=8, scale=2)
    videos.append({"index": i, "prompt": prompt, "seed": i, "webm": webm, "mp4": mp4,
                   "scores": {"colour_ok": i != 1, "direction_ok": True, "held_out": None,
                              "alignment": 0.3125 + i / 100}})
  return videos


def _results(step, metrics, videos=(), loss=None, skipped=None):
  results = {
      "format": "vdit-eval", "version": 1, "eval_name": "toy", "step": step,
      "workdir": "/tmp/run & co", "config_hash": "0123456789abcdef", "eval_config": {"fps": 8},
      "seeds": [0, 1, 2], "num_samples": len(videos), "num_reference": 256, "metrics": metrics,
      "skipped": skipped or {}, "videos": list(videos)}
  if loss is not None:
    results["val_loss_by_timestep"] = {"timesteps": [0.1, 0.3, 0.5, 0.7, 0.9], "loss": loss}
  return results


def _history():
  """Three steps out of order, with null metrics and one step lacking val_loss_by_timestep."""
  return [
      _results(300, {"fvd": 80.5, "fid": None, "colour_accuracy": 0.9, "val_loss": 0.12},
               loss=[0.3, 0.2, 0.15, 0.1, None]),
      _results(100, {"fvd": 150.0, "fid": 40.0, "colour_accuracy": 0.5, "val_loss": 0.2},
               loss=[0.5, 0.4, 0.3, 0.2, 0.1]),
      _results(200, {"fvd": None, "fid": 30.0, "colour_accuracy": None, "val_loss": 0.15}),
  ]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  """OUT/ with cross-step plots, one step with three real videos, its gallery and the overview."""
  out = str(tmp_path_factory.mktemp("eval"))
  step_dir = os.path.join(out, gallery.step_dirname(300))
  videos = _write_videos(step_dir, [(_NASTY_PROMPT, (230, 40, 40)),
                                    ("a green square moving right", (40, 200, 60)),
                                    ("a blue triangle moving up", (50, 80, 230))])
  history = _history()
  history[0]["videos"] = videos
  history[0]["skipped"] = {"fid": "needs the Inception weights (--inception=PATH)"}
  names = plots.write_plots(os.path.join(out, "plots"), history)
  page = gallery.write_gallery(step_dir, history[0], [f"../plots/{n}" for n in names])
  overview = gallery.write_overview(out, history, [f"plots/{n}" for n in names])
  return {"out": out, "step_dir": step_dir, "page": page, "overview": overview, "plots": names}


class _Links(html.parser.HTMLParser):
  """Collects every src and href attribute."""

  def __init__(self):
    super().__init__()
    self.links = []

  def handle_starttag(self, tag, attrs):
    self.links += [value for name, value in attrs if name in ("src", "href")]


def _links(path):
  parser = _Links()
  with open(path, encoding="utf-8") as f:
    parser.feed(f.read())
  return parser.links


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def test_plots_are_valid_pngs_sorted_with_nulls(tmp_path):
  names = plots.write_plots(str(tmp_path), _history())
  assert names == [plots.METRICS_PLOT, plots.VAL_LOSS_PLOT]
  for name in names:
    with Image.open(tmp_path / name) as image:
      assert image.format == "PNG" and image.width > 0 and image.height > 0
      image.load()  # decodes every chunk: a truncated file raises here
  assert sorted(os.listdir(tmp_path)) == sorted(names)  # no temporary files left behind


def test_single_step_without_val_loss_writes_only_metrics_plot(tmp_path):
  names = plots.write_plots(str(tmp_path), [_results(5, {"fvd": 1.0, "kid": None})])
  assert names == [plots.METRICS_PLOT]
  with Image.open(tmp_path / plots.METRICS_PLOT) as image:
    assert image.width > 0


def test_metric_names_keep_headline_order_and_drop_all_null():
  history = [_results(1, {"zeta": 1.0, "val_loss": 0.1, "fvd": 2.0, "fid": None}),
             _results(2, {"alpha": float("nan"), "fid": None})]
  assert plots.metric_names(history) == ["fvd", "val_loss", "zeta"]


def test_gallery_escapes_prompts(report):
  page = _read(report["page"])
  assert "alert" in page  # the prompt is there...
  assert "<script>alert" not in page and '"friends"' not in page  # ...but never raw
  assert "a red &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; circle &amp; &quot;friends&quot;" \
      in page
  assert "/tmp/run &amp; co" in page


def test_gallery_and_overview_links_exist(report):
  for page in (report["page"], report["overview"]):
    links = _links(page)
    assert links
    for link in links:
      target = os.path.join(os.path.dirname(page), urllib.parse.unquote(link))
      assert os.path.isfile(target), f"{page} links {link!r}, which does not exist"
  page_links = _links(report["page"])
  assert sum(link.endswith(".webm") for link in page_links) == 3
  assert sum(link.endswith(".mp4") for link in page_links) == 3
  assert f"../plots/{plots.METRICS_PLOT}" in page_links
  assert f"{gallery.step_dirname(300)}/index.html" in _links(report["overview"])


def test_gallery_lists_skipped_reasons_and_scores(report):
  page = _read(report["page"])
  assert "needs the Inception weights (--inception=PATH)" in page
  assert '<span class="ok" title="colour_ok">colour_ok ✓</span>' in page
  assert '<span class="bad" title="colour_ok">colour_ok ✗</span>' in page
  assert "alignment 0.323" in page  # floats to 3 decimals
  assert "0–2 (3 seeds)" in page


def test_pages_reference_nothing_outside(report):
  for page in (report["page"], report["overview"]):
    text = _read(page).lower()
    assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_gallery_rejects_absolute_and_remote_video_paths(tmp_path):
  for path in ("/abs/000.webm", "https://example.com/000.webm"):
    results = _results(1, {}, videos=[{"index": 0, "prompt": "p", "seed": 0, "webm": path}])
    with pytest.raises(ValueError, match="must be relative"):
      gallery.write_gallery(str(tmp_path), results)


def test_gallery_rejects_unknown_format(tmp_path):
  results = _results(1, {})
  results["format"] = "other"
  with pytest.raises(ValueError, match="vdit-eval"):
    gallery.write_gallery(str(tmp_path), results)


# ---------------------------------------------------------------------------- headless Chromium


_NO_BROWSER = "install chromium and chromium-driver (Debian) to run the browser tests"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  """Headless Chromium driven by selenium, from chromium + chromedriver on PATH (Debian installs
  them); the tests that use it skip saying so otherwise (tests never install anything)."""
  webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
  from selenium.webdriver.chrome.service import Service
  chromium, chromedriver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
  if not (chromium and chromedriver):
    pytest.skip(_NO_BROWSER)
  options = webdriver.ChromeOptions()
  options.binary_location = chromium  # with the driver path below, Selenium Manager never runs
  for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
               f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service(chromedriver), options=options)
  driver.set_page_load_timeout(_PLAY_TIMEOUT_S)
  yield driver
  driver.quit()


_MEDIA_STATE_JS = """
return {
  videos: Array.from(document.querySelectorAll('video')).map(v => ({
    src: v.currentSrc, readyState: v.readyState, width: v.videoWidth, time: v.currentTime,
    paused: v.paused, error: v.error && v.error.code})),
  images: Array.from(document.images).map(i => ({src: i.src, complete: i.complete,
                                                  width: i.naturalWidth})),
  broken: Array.from(document.querySelectorAll('.card.broken')).map(c => c.id),
};
"""


def _poll(driver, done):
  """Media state once `done(state)` holds, or the last state after _PLAY_TIMEOUT_S."""
  deadline = time.monotonic() + _PLAY_TIMEOUT_S
  while True:
    state = driver.execute_script(_MEDIA_STATE_JS)
    if done(state) or time.monotonic() > deadline:
      return state
    time.sleep(0.2)


def _playing(video):
  return video["readyState"] >= 2 and video["width"] > 0 and video["time"] > 0 and not video["paused"]


@pytest.mark.browser
def test_every_video_plays_and_image_loads_in_chromium(browser, report):
  browser.get("file://" + report["page"])
  state = _poll(browser, lambda s: all(map(_playing, s["videos"])) and all(
      i["complete"] and i["width"] > 0 for i in s["images"]))
  assert len(state["videos"]) == 3 and len(state["images"]) == len(report["plots"]) == 2
  for video in state["videos"]:
    assert _playing(video), f"video did not play within {_PLAY_TIMEOUT_S} s: {video}"
    assert video["src"].endswith(".webm")  # VP9 is the first choice
  for image in state["images"]:
    assert image["width"] > 0, f"image did not load: {image}"
  assert state["broken"] == []


@pytest.mark.browser
def test_overview_plots_load_in_chromium(browser, report):
  browser.get("file://" + report["overview"])
  state = _poll(browser, lambda s: all(i["complete"] and i["width"] > 0 for i in s["images"]))
  assert len(state["images"]) == 2 and all(i["width"] > 0 for i in state["images"]), state


@pytest.mark.browser
def test_mp4_fallback_plays_in_chromium(browser, tmp_path):
  """A browser without VP9 falls back to the H.264 mp4: Chromium must decode it too."""
  videos = _write_videos(str(tmp_path), [("mp4 only", (200, 200, 40))])
  del videos[0]["webm"]
  page = gallery.write_gallery(str(tmp_path), _results(7, {}, videos=videos))
  browser.get("file://" + page)
  state = _poll(browser, lambda s: all(map(_playing, s["videos"])))
  assert _playing(state["videos"][0]) and state["videos"][0]["src"].endswith(".mp4"), state


@pytest.mark.browser
def test_missing_or_corrupt_video_cards_marked_broken_in_chromium(browser, tmp_path):
  (tmp_path / "videos").mkdir()
  (tmp_path / "videos" / "bad.webm").write_bytes(b"not a video at all")
  videos = [{"index": 0, "prompt": "missing", "seed": 0, "webm": "videos/none.webm",
             "mp4": "videos/none.mp4"},
            {"index": 1, "prompt": "corrupt", "seed": 1, "webm": "videos/bad.webm"}]
  page = gallery.write_gallery(str(tmp_path), _results(8, {}, videos=videos))
  browser.get("file://" + page)
  state = _poll(browser, lambda s: len(s["broken"]) == 2)
  assert sorted(state["broken"]) == ["video-0", "video-1"], state
