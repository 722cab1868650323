"""The evaluation report as static HTML that opens offline from file:// (no external assets).

Layout the evaluator writes (every path in results.json is relative to its step directory):

  OUT/index.html                     write_overview: one row per step, cross-step plots
  OUT/plots/*.png                    vdit.eval.plots.write_plots
  OUT/step_00000300/results.json     the evaluator's results (schema below)
  OUT/step_00000300/index.html       write_gallery: header, metrics, plots, one card per video
  OUT/step_00000300/videos/000.webm  (and .mp4), listed under results["videos"]

results.json: {"format": "vdit-eval", "version": 1, "eval_name", "step", "workdir", "config_hash",
"eval_config", "seeds", "num_samples", "num_reference", "metrics": {name: float|null},
"skipped": {name: reason}, "val_loss_by_timestep": {"timesteps": [...], "loss": [...]},
"videos": [{"index", "prompt", "seed", "webm", "mp4", "scores": {name: bool|float|null}}]}; with an eval
safety policy also "safety" (vdit.eval.safety_stage) and a "safety" decision per video (a blocked
one has no files: its card says it was withheld).

Every value from results (prompts above all) is HTML-escaped; a video whose sources all fail to
load, or that fails to decode, gets the card class `broken` and a visible note.
"""
import html
import json
import os
import urllib.parse
import uuid
from typing import Sequence

from vdit.eval import plots as plots_lib

FORMAT, VERSION = "vdit-eval", 1
INDEX = "index.html"

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .5em; } h2 { font-size: 1.1em; margin: 1.5em 0 .5em; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.skipped td { color: #888; font-style: italic; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: .15em 1em; margin: 0; }
dl.header dt { font-weight: 600; } dl.header dd { margin: 0; font-family: monospace; }
.plots img { max-width: 100%; border: 1px solid #ddd; background: #fff; }
.plots figure { display: inline-block; margin: 0 1em 1em 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 1em; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .5em; }
.card video { width: 100%; background: #000; image-rendering: pixelated; }
.card .prompt { font-weight: 600; margin: .3em 0; overflow-wrap: anywhere; }
.card .meta, .card .scores { font-size: .9em; color: #555; }
.card .scores span { margin-right: .6em; white-space: nowrap; }
.ok { color: #1a7f37; } .bad { color: #cf222e; }
.card .broken-note { display: none; color: #cf222e; font-weight: 600; }
.card.broken { border: 2px solid #cf222e; } .card.broken .broken-note { display: block; }
"""
# Handlers are attributes on the last <source> and on <video>: they exist as soon as the element
# is parsed, so a fast failure (a missing local file) cannot fire before anyone listens.
_SCRIPT = """
function vditBroken(el) {
  var card = el.closest('.card');
  if (card) card.classList.add('broken');
}
"""


def step_dirname(step: int) -> str:
  """The per-step directory name under the evaluation output: step_00000300."""
  return f"step_{step:08d}"


def write_gallery(step_dir: str, results: dict, plots: Sequence[str] = ()) -> str:
  """Writes step_dir/index.html for one evaluated checkpoint.

  Args:
    step_dir: the step's output directory; video paths in results are relative to it.
    results: the results.json dict (module docstring).
    plots: image paths relative to step_dir, e.g. "../plots/metrics_vs_step.png".
  Returns:
    The path of the written index.html.
  """
  _check_results(results, "results")
  step = results["step"]
  title = f"{results.get('eval_name', 'eval')} — step {step}"
  videos = results.get("videos") or []
  if not isinstance(videos, list):
    raise ValueError(f"results['videos'] must be a list of dicts, got {type(videos).__name__}")
  cards = "\n".join(_card(i, video) for i, video in enumerate(videos))
  body = "\n".join([
      f"<h1>{_esc(title)}</h1>",
      _header(results),
      "<h2>Metrics</h2>",
      _metrics_table(results.get("metrics") or {}, results.get("skipped") or {}),
      *([_safety_table(results["safety"])] if results.get("safety") else []),
      _plots_html(plots),
      f"<h2>Samples ({len(videos)})</h2>",
      f'<div class="grid">\n{cards}\n</div>' if videos else "<p>No videos in results.</p>",
  ])
  path = os.path.join(step_dir, INDEX)
  _write_atomic(path, _page(title, body))
  return path


def write_overview(out_dir: str, history: Sequence[dict], plots: Sequence[str] = ()) -> str:
  """Writes out_dir/index.html: one row per step (linking its gallery) and the cross-step plots.

  Args:
    out_dir: the evaluation output directory holding step_{step:08d}/ directories.
    history: results.json dicts of the evaluated steps, any order.
    plots: image paths relative to out_dir, e.g. "plots/metrics_vs_step.png".
  Returns:
    The path of the written index.html.
  """
  for i, result in enumerate(history):
    _check_results(result, f"history[{i}]")
  history = plots_lib.sort_by_step(history)
  present = set(plots_lib.metric_names(history))
  columns = [name for name in plots_lib.METRIC_ORDER if name in present] or sorted(present)
  head = "".join(f"<th>{_esc(name)}</th>" for name in ["step", *columns, "samples", "config hash"])
  rows = []
  for result in history:
    step_page = f"{step_dirname(result['step'])}/{INDEX}"
    step_cell = (f'<a href="{_url(step_page, "step page")}">{result["step"]}</a>'
                 if os.path.exists(os.path.join(out_dir, step_page)) else f"{result['step']} (no page)")
    metrics = result.get("metrics") or {}
    cells = [f'<td class="num">{step_cell}</td>']
    cells += [f'<td class="num">{_esc(_format_metric(metrics.get(name)))}</td>' for name in columns]
    cells += [f'<td class="num">{_esc(result.get("num_samples", "—"))}</td>',
              f'<td><code>{_esc(result.get("config_hash", "—"))}</code></td>']
    rows.append(f"<tr>{''.join(cells)}</tr>")
  names = sorted({str(result.get("eval_name", "eval")) for result in history}) or ["eval"]
  workdirs = sorted({str(result.get("workdir", "—")) for result in history}) or ["—"]
  title = f"{', '.join(names)} — {len(history)} evaluated step{'s' * (len(history) != 1)}"
  body = "\n".join([
      f"<h1>{_esc(title)}</h1>",
      f'<dl class="header"><dt>workdir</dt><dd>{_esc(", ".join(workdirs))}</dd></dl>',
      "<h2>Steps</h2>",
      f"<table><tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>" if rows else
      "<p>No evaluated steps.</p>",
      "<p>Every metric, skip reason and sample is on each step's page.</p>",
      _plots_html(plots),
  ])
  path = os.path.join(out_dir, INDEX)
  _write_atomic(path, _page(title, body))
  return path


def _check_results(results, where: str) -> None:
  if not isinstance(results, dict):
    raise ValueError(f"{where} must be a results.json dict, got {type(results).__name__}")
  if results.get("format") != FORMAT or results.get("version") != VERSION:
    raise ValueError(
        f"{where} has format {results.get('format')!r} version {results.get('version')!r}; this "
        f"gallery reads format {FORMAT!r} version {VERSION} (as vdit.evaluate writes it)")
  if isinstance(results.get("step"), bool) or not isinstance(results.get("step"), int):
    raise ValueError(f"{where} needs an integer 'step', got {results.get('step')!r}")


def _esc(value) -> str:
  return html.escape(str(value), quote=True)


def _url(path: str, what: str) -> str:
  """A relative path as an escaped, percent-quoted href/src; ValueError for absolute paths or URLs."""
  path = str(path)
  if not path or os.path.isabs(path) or urllib.parse.urlsplit(path).scheme or path.startswith("//"):
    raise ValueError(
        f"{what} path {path!r} must be relative to the page's directory (the report has to open "
        "offline and survive being copied elsewhere)")
  return _esc(urllib.parse.quote(path.replace(os.sep, "/")))


def _format_metric(value) -> str:
  if value is None:
    return "—"
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, int):
    return f"{value:,}"
  if plots_lib.is_scalar(value) and abs(value) >= 1000:
    return f"{value:,.1f}"
  return format(value, ".4g")


def _seeds_text(seeds) -> str:
  if not isinstance(seeds, list) or not seeds:
    return "—"
  if all(isinstance(s, int) for s in seeds) and sorted(seeds) == list(range(min(seeds), max(seeds) + 1)):
    return f"{min(seeds)}–{max(seeds)} ({len(seeds)} seeds)"
  shown = ", ".join(str(s) for s in seeds[:8])
  return f"{shown}{', …' if len(seeds) > 8 else ''} ({len(seeds)} seeds)"


def _header(results: dict) -> str:
  fields = [
      ("eval", results.get("eval_name", "—")),
      ("workdir", results.get("workdir", "—")),
      ("step", results["step"]),
      ("config hash", results.get("config_hash", "—")),
      ("samples", results.get("num_samples", "—")),
      ("reference videos", results.get("num_reference", "—")),
      ("seeds", _seeds_text(results.get("seeds"))),
  ]
  rows = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in fields)
  config = results.get("eval_config")
  details = ("" if config is None else "<details><summary>eval config</summary><pre>"
             f"{_esc(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre></details>")
  return f'<dl class="header">{rows}</dl>\n{details}'


def _metrics_table(metrics: dict, skipped: dict) -> str:
  ordered = [n for n in plots_lib.METRIC_ORDER if n in metrics or n in skipped]
  names = ordered + sorted((set(metrics) | set(skipped)) - set(ordered), key=str)
  if not names:
    return "<p>No metrics.</p>"
  rows = []
  for name in names:
    value, reason = metrics.get(name), skipped.get(name)
    if value is None and reason is not None:
      rows.append(f'<tr class="skipped"><td>{_esc(name)}</td><td>skipped</td>'
                  f"<td>{_esc(reason)}</td></tr>")
    else:
      note = "" if reason is None else _esc(reason)
      rows.append(f'<tr><td>{_esc(name)}</td><td class="num">{_esc(_format_metric(value))}</td>'
                  f"<td>{note}</td></tr>")
  return ("<table><tr><th>metric</th><th>value</th><th>note</th></tr>\n"
          + "\n".join(rows) + "\n</table>")


def _safety_table(safety: dict) -> str:
  rows = "\n".join(f"<tr><td>{_esc(name)}</td><td>{_esc(c['action'])}</td>"
                   + "".join(f'<td class="num">{100 * c[k]:.1f}%</td>' for k in ("prompt_rate", "frames_rate", "rate"))
                   + "</tr>" for name, c in safety["categories"].items())
  return (f"<h2>Safety</h2>\n<p>policy {_esc(safety['policy'])}: {100 * safety['blocked_rate']:.1f}% blocked, "
          f"{100 * safety['flagged_rate']:.1f}% flagged of {_esc(safety['num_videos'])} videos</p>\n"
          "<table><tr><th>category</th><th>action</th><th>prompts hit</th><th>videos hit</th><th>either</th></tr>\n"
          f"{rows}\n</table>")


def _plots_html(plots: Sequence[str]) -> str:
  if not plots:
    return ""
  figures = "\n".join(
      f'<figure><img src="{_url(p, "plot")}" alt="{_esc(os.path.basename(p))}">'
      f"<figcaption>{_esc(os.path.basename(p))}</figcaption></figure>" for p in plots)
  return f'<h2>Plots</h2>\n<div class="plots">\n{figures}\n</div>'


def _format_score(name: str, value) -> str:
  if isinstance(value, bool):
    mark, cls = ("✓", "ok") if value else ("✗", "bad")
    return f'<span class="{cls}" title="{_esc(name)}">{_esc(name)} {mark}</span>'
  if plots_lib.is_scalar(value):
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
  else:
    text = "—" if value is None else str(value)
  return f'<span title="{_esc(name)}">{_esc(name)} {_esc(text)}</span>'


def _card(position: int, video: dict) -> str:
  if not isinstance(video, dict):
    raise ValueError(f"results['videos'][{position}] must be a dict, got {type(video).__name__}")
  sources = [(video[key], kind) for key, kind in (("webm", "video/webm"), ("mp4", "video/mp4"))
             if video.get(key)]
  where = f"results['videos'][{position}]"
  tags = []
  for i, (path, kind) in enumerate(sources):
    last = ' onerror="vditBroken(this)"' if i == len(sources) - 1 else ""
    tags.append(f'<source src="{_url(path, where)}" type="{kind}"{last}>')
  safety = video.get("safety")
  withheld = not tags and bool(safety) and safety.get("decision") == "blocked"
  if tags:
    media = ('<video autoplay loop muted playsinline controls preload="auto" '
             'onerror="vditBroken(this)">' + "".join(tags) + "</video>")
    note = "video failed to load"
  else:
    media, note = "", "no video file in results"
  verdict = "" if not safety or safety.get("decision") == "allowed" else (
      f'<p class="meta">safety: {_esc(safety.get("decision"))} ({_esc(safety.get("category"))}, '
      f'{_esc(safety.get("stage"))} stage){"; withheld" if withheld else ""}</p>')
  scores = video.get("scores") or {}
  score_html = " ".join(_format_score(str(k), v) for k, v in scores.items())
  return "\n".join([
      f'<div class="card{"" if tags or withheld else " broken"}" id="video-{_esc(video.get("index", position))}">',
      media,
      f'<p class="broken-note">{note}</p>',
      f'<p class="prompt">{_esc(video.get("prompt", ""))}</p>',
      f'<p class="meta">#{_esc(video.get("index", position))} · seed {_esc(video.get("seed", "—"))}</p>',
      *([verdict] if verdict else []),  # without a policy the card is as before
      f'<p class="scores">{score_html}</p>' if score_html else "",
      "</div>",
  ])


def _page(title: str, body: str) -> str:
  return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
          f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
          f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n<script>{_SCRIPT}</script>\n"
          f"</head>\n<body>\n{body}\n</body>\n</html>\n")


def _write_atomic(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
