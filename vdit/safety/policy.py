"""The safety policy file: what to check, and what to do about a hit. JSON, read once at a command's
entry point and validated whole before any compute.

  {
    "version": 1,
    "c2pa_prompt": true,                     # write the prompt into C2PA manifests (default true)
    "allowed_phrases": ["killer whale", "shooting a film", ...],   # never matched by any term
    "categories": {
      "violence": {
        "action": "block",                   # block | blur | flag
        "checks": [
          {"type": "terms", "terms": ["kill", "behead", "blow job", ...]},
          {"type": "command", "command": "my-guard --category violence", "timeout_s": 10, "threshold": 0.5},
          {"type": "classifier", "weights": "configs/safety/prompt_classifier.safetensors", "threshold": 0.5},
          {"type": "frames", "classifier": "toy_colour", "colour": "red", "every": 1, "threshold": 0.5},
          {"type": "frames", "classifier": "nudenet", "labels": ["FEMALE_BREAST_EXPOSED", ...],
           "every": 4, "threshold": 0.5},
          {"type": "frames", "classifier": "clip", "model": "models/clip-vit-base-patch32",
           "concepts": ["a gun", "blood"], "every": 4, "threshold": 0.3}
        ]
      }
    }
  }

Prompt checks (`terms`, `command`) run on every prompt and on its expanded caption before any model
work; `frames` checks run on every `every`-th frame of each generated video before it is written,
and on conditioning inputs (--image, --video, --edit, --connect) before any model work.
`terms`: vdit.safety.text_match (whole words, normalised, inflected). `classifier`: vdit's own
offline prompt classifier (vdit.safety.prompt_classifier; weights by path, relative to the working
directory), a hit when its P(violating) reaches `threshold`. `command`: a program given the
prompt on stdin that prints a JSON verdict on stdout: a score in [0, 1], `{"score": S}` or
`{"flagged": true|false}`; a hit when the score reaches `threshold`. A command that fails, hangs
past `timeout_s` or prints no verdict blocks the prompt (fails closed). `frames`: a frame
classifier (vdit.safety.frame_check) scoring each checked frame in [0, 1]; a hit when the largest
score reaches `threshold`. `clip` (vdit.safety.clip_frames): a CLIP model folder by path (relative
to the working directory: config.json, model.safetensors, tokenizer.json or vocab.json + merges.txt)
and concept prompts; a frame's score is its largest cosine similarity with a concept, clipped to
[0, 1]; set `threshold` for the model and concepts on examples (cosines are model-specific).
Actions: `block` writes nothing of the video; `flag` writes it and records the hit; `blur` blurs the
frames scoring at or above the threshold (and the frames up to the next checked one) and records it
as flagged; a prompt hit in a `blur` category is flagged (only frames can be blurred).
"""
import dataclasses
import json
import os
import shlex
import shutil

from vdit.core.errors import UserError

ACTIONS = ("block", "blur", "flag")
FRAME_CLASSIFIERS = ("toy_colour", "nudenet", "clip")
_CHECK_KEYS = {"terms": {"type", "terms"}, "command": {"type", "command", "timeout_s", "threshold"},
               "classifier": {"type", "weights", "threshold"},
               "frames": {"type", "classifier", "colour", "labels", "model", "concepts", "every", "threshold"}}


class PolicyError(UserError):
  """A policy file that cannot be used; the message names the file, the line and the fix."""


@dataclasses.dataclass(frozen=True)
class TermsCheck:
  terms: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CommandCheck:
  command: str
  timeout_s: float
  threshold: float


@dataclasses.dataclass(frozen=True)
class ClassifierCheck:
  weights: str  # a vdit.safety.prompt_classifier safetensors file
  threshold: float


@dataclasses.dataclass(frozen=True)
class FramesCheck:
  classifier: str  # one of FRAME_CLASSIFIERS
  every: int
  threshold: float
  colour: str | None = None  # toy_colour
  labels: tuple[str, ...] = ()  # nudenet
  model: str | None = None  # clip: the model folder
  concepts: tuple[str, ...] = ()  # clip


@dataclasses.dataclass(frozen=True)
class Category:
  name: str
  action: str
  checks: tuple

  def of(self, kind):
    return [c for c in self.checks if isinstance(c, kind)]


@dataclasses.dataclass(frozen=True)
class Policy:
  path: str
  categories: tuple[Category, ...]
  allowed_phrases: tuple[str, ...] = ()
  c2pa_prompt: bool = True

  @property
  def checks_frames(self) -> bool:
    return any(c.of(FramesCheck) for c in self.categories)


def default_path() -> str:
  """The shipped default policy, configs/safety/default.json beside the vdit package (a source tree
  or an install; configs/ is data here, never imported)."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.join(root, "configs", "safety", "default.json")


def load(path: str) -> Policy:
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError:
    raise PolicyError(f"Safety policy {path} does not exist; pass an existing JSON policy file "
                      f"(the default is {default_path()}).") from None
  except (OSError, UnicodeDecodeError) as e:
    raise PolicyError(f"Cannot read safety policy {path} ({e}); pass a readable UTF-8 JSON file.") from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise PolicyError(f"Safety policy {path} line {e.lineno}: not valid JSON ({e.msg}); fix the file.") from None
  return _Parser(path, text).policy(data)


class _Parser:
  """Checks the decoded JSON; errors name the line by finding the offending key in the text."""

  def __init__(self, path, text):
    self.path, self.text = path, text

  def fail(self, problem, *where):
    at = 0
    for needle in where:  # each found after the previous one: the category, then its key
      found = self.text.find(json.dumps(needle), at + 1 if at else 0)
      at = found if found >= 0 else at
    line = self.text.count("\n", 0, at) + 1
    raise PolicyError(f"Safety policy {self.path} line {line}: {problem}; fix the file (schema: vdit/safety/policy.py).")

  def policy(self, data) -> Policy:
    if not isinstance(data, dict):
      self.fail("the top level must be an object with \"version\" and \"categories\"")
    unknown = set(data) - {"version", "c2pa_prompt", "allowed_phrases", "categories"}
    if unknown:
      self.fail(f"unknown key {sorted(unknown)[0]!r} (keys: version, c2pa_prompt, allowed_phrases, categories)",
                sorted(unknown)[0])
    if data.get("version") != 1:
      self.fail(f"\"version\" must be 1, got {data.get('version')!r}", "version")
    allowed = data.get("allowed_phrases", [])
    if not isinstance(allowed, list) or not all(isinstance(p, str) and p.strip() for p in allowed):
      self.fail("\"allowed_phrases\" must be a list of non-empty strings", "allowed_phrases")
    if not isinstance(data.get("c2pa_prompt", True), bool):
      self.fail("\"c2pa_prompt\" must be true or false", "c2pa_prompt")
    categories = data.get("categories")
    if not isinstance(categories, dict):
      self.fail("\"categories\" must be an object of category name -> {\"action\", \"checks\"}", "categories")
    return Policy(os.path.abspath(self.path), tuple(self.category(n, c) for n, c in categories.items()),
                  tuple(allowed), data.get("c2pa_prompt", True))

  def category(self, name, data) -> Category:
    if not isinstance(data, dict) or set(data) != {"action", "checks"}:
      self.fail(f"category {name!r} must be an object with exactly \"action\" and \"checks\"", name)
    if data["action"] not in ACTIONS:
      self.fail(f"category {name!r}: action {data['action']!r} is not one of {', '.join(ACTIONS)}", name, "action")
    checks = data["checks"]
    if not isinstance(checks, list) or not checks:
      self.fail(f"category {name!r}: \"checks\" must be a non-empty list", name, "checks")
    return Category(name, data["action"], tuple(self.check(name, i, c) for i, c in enumerate(checks)))

  def check(self, name, i, data):
    kind = data.get("type") if isinstance(data, dict) else None
    where = (name, "checks") + ("type",) * (i + 1)  # the i-th check's "type" key
    if kind not in _CHECK_KEYS:
      self.fail(f"category {name!r} check {i + 1}: \"type\" must be one of {', '.join(_CHECK_KEYS)}", *where)
    unknown = set(data) - _CHECK_KEYS[kind]
    if unknown:
      self.fail(f"category {name!r} check {i + 1} ({kind}): unknown key {sorted(unknown)[0]!r}", *where,
                sorted(unknown)[0])
    if kind == "terms":
      terms = data.get("terms")
      if not isinstance(terms, list) or not terms or not all(isinstance(t, str) and t.strip() for t in terms):
        self.fail(f"category {name!r}: \"terms\" must be a non-empty list of non-empty strings", *where, "terms")
      return TermsCheck(tuple(terms))
    threshold = data.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
      self.fail(f"category {name!r}: \"threshold\" must be a number in [0, 1], got {threshold!r}", *where, "threshold")
    if kind == "command":
      return self.command(name, data, threshold, where)
    if kind == "classifier":
      path = data.get("weights")
      if not isinstance(path, str) or not os.path.isfile(path):
        self.fail(f"category {name!r}: classifier weights {path!r} is not a file (train one with python -m "
                  "vdit.safety.train_prompt_classifier)", *where, "weights")
      return ClassifierCheck(os.path.abspath(path), float(threshold))
    return self.frames(name, data, threshold, where)

  def command(self, name, data, threshold, where) -> CommandCheck:
    command, timeout = data.get("command"), data.get("timeout_s", 30)
    argv = shlex.split(command) if isinstance(command, str) else []
    if not argv:
      self.fail(f"category {name!r}: \"command\" must be a program and its arguments", *where, "command")
    if shutil.which(argv[0]) is None:
      self.fail(f"category {name!r}: classifier program {argv[0]!r} was not found", *where, "command")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
      self.fail(f"category {name!r}: \"timeout_s\" must be a positive number of seconds", *where, "timeout_s")
    return CommandCheck(command, float(timeout), float(threshold))

  def frames(self, name, data, threshold, where) -> FramesCheck:
    classifier, every = data.get("classifier"), data.get("every", 1)
    if classifier not in FRAME_CLASSIFIERS:
      self.fail(f"category {name!r}: frame classifier {classifier!r} is not one of {', '.join(FRAME_CLASSIFIERS)}",
                *where, "classifier")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
      self.fail(f"category {name!r}: \"every\" must be a positive integer (check every k-th frame)", *where, "every")
    if classifier == "toy_colour":
      from vdit.toy import spec as toy_spec
      if data.get("colour") not in toy_spec.COLOURS:
        self.fail(f"category {name!r}: toy_colour needs \"colour\", one of {', '.join(toy_spec.COLOURS)}",
                  *where, "classifier")
      return FramesCheck(classifier, every, float(threshold), colour=data["colour"])
    if classifier == "clip":
      return self.clip(name, data, every, threshold, where)
    labels = data.get("labels")
    from vdit.safety import nudenet_frames
    if not isinstance(labels, list) or not labels or set(labels) - set(nudenet_frames.LABELS):
      self.fail(f"category {name!r}: nudenet needs \"labels\", a list of {', '.join(nudenet_frames.LABELS)}",
                *where, "labels")
    problem = nudenet_frames.unavailable()
    if problem:
      self.fail(f"category {name!r}: {problem}", *where, "nudenet")
    return FramesCheck(classifier, every, float(threshold), labels=tuple(labels))

  def clip(self, name, data, every, threshold, where) -> FramesCheck:
    concepts = data.get("concepts")
    if not isinstance(concepts, list) or not concepts or not all(isinstance(c, str) and c.strip() for c in concepts):
      self.fail(f"category {name!r}: clip needs \"concepts\", a non-empty list of non-empty prompts", *where,
                "concepts")
    model = data.get("model")
    if not isinstance(model, str) or not model:
      self.fail(f"category {name!r}: clip needs \"model\", the path of a CLIP model folder", *where, "classifier")
    from vdit.safety import clip_frames
    missing = clip_frames.missing_file(model)
    if missing is not None:
      self.fail(f"category {name!r}: clip model file {missing!r} does not exist (\"model\" is a folder holding "
                "config.json, model.safetensors and tokenizer.json or vocab.json + merges.txt, as CLIPModel and "
                "its tokenizer's save_pretrained write them)", *where, "model")
    return FramesCheck("clip", every, float(threshold), model=os.path.abspath(model),
                       concepts=tuple(concepts))
