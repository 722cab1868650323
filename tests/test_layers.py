"""vdit's import layers, checked on the source with `ast` (nothing of vdit is imported or run).

LAYERS is the one written copy of the rule (docs/ARCHITECTURE.md draws it): a package imports its
own modules and packages of lower layers only, never a layer-mate or a higher layer; the command
modules at the top of vdit/ may import anything in vdit; nothing in vdit imports `configs` or
`data_prep`; no import cycles. An import counts wherever it is written, inside functions too.
"""
import ast
import functools
import os


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowest first.
LAYERS = (
    ("core",),  # errors, logs, safetensors weights, Orbax checkpoint, finite checks, workdir file names, command runner
    ("parallel", "media"),  # distributed init, mesh, sharding rules | video I/O, pixel codec, provenance, watermark
    ("data",),  # Grain pipeline, dataset files, records, buckets
    ("toy",),  # toy world spec, renderer, prompts, expander, judge
    ("safety",),  # policy, prompt checks, frame classifiers, decisions
    ("model",),  # DiT, layers, attention, text encoder, factory
    ("text", "vae"),  # tokenizers, T5, conditioner, prompt expansion | Wan VAE, tiling, latent space
    ("diffusion",),  # flow, samplers, generation, sampling modes
    ("config",),  # the config boundary: schema, validation, upgrade, workdir config.json
    ("eval",),  # metrics, feature networks, evaluator
    ("training",),  # the loop, trainers, checkpoints of state, throughput
    ("interop",),  # converters of released weights (Wan 2.1)
)
_RANK = {package: i for i, layer in enumerate(LAYERS) for package in layer}
_OUTSIDE = ("configs", "data_prep")  # experiments and data jobs sit above vdit, never below it
_MAX_TOP_MODULES = 8  # vdit/*.py besides the (empty) __init__.py: the commands, not a grab-bag
# Config objects stop at the boundary; below it code takes plain values (vdit/*.py also may).
_ML_COLLECTIONS_OK = ("vdit/config/", "vdit/core/command.py", "vdit/eval/eval_config.py", "vdit/training/vae_config.py")


@functools.cache
def _modules(root):
  """{dotted module name: path relative to root} for every .py file under root/vdit."""
  found = {}
  for directory, dirs, files in os.walk(os.path.join(root, "vdit")):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    for name in files:
      if name.endswith(".py"):
        path = os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")
        found[path[:-3].replace("/", ".").removesuffix(".__init__")] = path
  return found


def _in_vdit(name):
  return name == "vdit" or name.startswith("vdit.")


def _package(module, modules):
  """The vdit package a module belongs to ("model" for vdit.model.dit); None at the top of vdit/."""
  parts = module.split(".")
  if len(parts) < 2 or modules.get(module, "").count("/") == 1:
    return None
  return parts[1]


def _resolve(name, modules):
  """The deepest vdit module a dotted name loads (`vdit.data.pipeline.Pipeline` -> the module)."""
  while name not in modules and "." in name:
    name = name.rsplit(".", 1)[0]
  return name


def _targets(node, module, path, modules):
  """The modules one import statement loads: resolved vdit modules, or outside names as written."""
  if isinstance(node, ast.Import):
    return [_resolve(a.name, modules) if _in_vdit(a.name) else a.name for a in node.names]
  base = node.module or ""
  if node.level:  # relative: from the module's own package upward
    parts = module.split(".")[:None if path.endswith("__init__.py") else -1]
    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
  if not _in_vdit(base):
    return [base]
  return [_resolve(f"{base}.{alias.name}", modules) for alias in node.names]


@functools.cache
def _imports(root):
  """[(path, line, import text, importing module, imported module)] for every import in vdit."""
  modules = _modules(root)
  found = []
  for module, path in modules.items():
    with open(os.path.join(root, path), encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        found += [(path, node.lineno, ast.unparse(node), module, target)
                  for target in _targets(node, module, path, modules)]
  return found


def layer_violations(root):
  """One message per import that breaks the layers or reaches configs/data_prep."""
  modules = _modules(root)
  problems = []
  for path, line, text, module, target in _imports(root):
    where = f"{path}:{line}: `{text}`"
    if target.split(".")[0] in _OUTSIDE:
      problems.append(f"{where}: vdit never imports {', '.join(_OUTSIDE)} (they sit above it)")
      continue
    mine, theirs = _package(module, modules), _package(target, modules)
    if not _in_vdit(target) or mine is None or mine == theirs:
      continue
    if mine not in _RANK:
      problems.append(f"{where}: vdit.{mine} is in no layer (add it to LAYERS in tests/test_layers.py)")
    elif theirs is None:
      problems.append(f"{where}: vdit.{mine} imports {target} from the top of vdit/, where the commands sit "
                      "above every layer")
    elif theirs not in _RANK or _RANK[theirs] >= _RANK[mine]:
      lower = [p for layer in LAYERS[:_RANK[mine]] for p in layer]
      problems.append(f"{where}: vdit.{mine} (layer {_RANK[mine]}) may import only itself and lower layers "
                      f"({', '.join(lower) or 'none'}); vdit.{theirs} is layer {_RANK.get(theirs, '?')}")
  return problems


def import_cycles(root):
  """One message per group of vdit modules that import each other, walking one cycle through it."""
  modules = _modules(root)
  edges = {}  # module -> {imported module: (path, line, text)}, first import of each pair
  for path, line, text, module, target in _imports(root):
    if target in modules and target != module:
      edges.setdefault(module, {}).setdefault(target, (path, line, text))
  index, low, stack, groups = {}, {}, [], []

  def visit(node):  # Tarjan's strongly connected components
    index[node] = low[node] = len(index)
    stack.append(node)
    for nxt in sorted(edges.get(node, {})):
      if nxt not in index:
        visit(nxt)
        low[node] = min(low[node], low[nxt])
      elif nxt in stack:
        low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
      group = stack[stack.index(node):]
      del stack[stack.index(node):]
      if len(group) > 1:
        groups.append(set(group))

  for node in sorted(modules):
    if node not in index:
      visit(node)
  problems = []
  for group in groups:
    start = min(group)
    parent, queue = {start: None}, [start]
    while start not in edges[queue[0]]:  # breadth first: the shortest way back to start
      for nxt in sorted(edges[queue[0]]):
        if nxt in group and nxt not in parent:
          parent[nxt] = queue[0]
          queue.append(nxt)
      queue.pop(0)
    cycle = [queue[0]]
    while parent[cycle[-1]] is not None:
      cycle.append(parent[cycle[-1]])
    cycle = cycle[::-1] + [start]
    hops = [f"{edges[a][b][0]}:{edges[a][b][1]} `{edges[a][b][2]}`" for a, b in zip(cycle, cycle[1:])]
    problems.append("import cycle (no vdit module may import itself back): " + " -> ".join(hops))
  return problems


def _read(root, path):
  with open(os.path.join(root, path), encoding="utf-8") as f:
    return f.read()


def package_problems(root):
  """Packages without a docstring'd __init__.py, unknown or missing packages, a crowded top level."""
  problems = []
  for directory, dirs, files in os.walk(os.path.join(root, "vdit")):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    rel = os.path.relpath(directory, root).replace(os.sep, "/")
    if rel == "vdit" or not any(f.endswith(".py") for f in files):
      continue
    init = f"{rel}/__init__.py"
    if "__init__.py" not in files or not ast.get_docstring(ast.parse(_read(root, init))):
      problems.append(f"{init}: every package under vdit/ needs an __init__.py whose docstring says what it holds")
  packages = {_package(m, _modules(root)) for m in _modules(root)} - {None}
  problems += [f"vdit/{p}/: package in no layer (add it to LAYERS in tests/test_layers.py)"
               for p in sorted(packages - set(_RANK))]
  problems += [f"LAYERS names vdit.{p}, which does not exist" for p in sorted(set(_RANK) - packages)]
  top = sorted(p for p in _modules(root).values() if p.count("/") == 1 and p != "vdit/__init__.py")
  if len(top) > _MAX_TOP_MODULES:
    problems.append(f"vdit/ holds {len(top)} modules at its top ({', '.join(top)}); at most {_MAX_TOP_MODULES}: "
                    "only commands live there, everything else in a package")
  return problems


def ml_collections_outside_boundary(root):
  problems = []
  for path, line, text, _, target in _imports(root):
    allowed = path.count("/") == 1 or path.startswith(_ML_COLLECTIONS_OK)
    if target.split(".")[0] == "ml_collections" and not allowed:
      problems.append(f"{path}:{line}: `{text}`: only {', '.join(_ML_COLLECTIONS_OK)} and the commands "
                      "(vdit/*.py) import ml_collections; below the config boundary code takes plain values")
  return problems


def test_lower_layers_never_import_higher_ones_or_configs_or_data_prep():
  problems = layer_violations(REPO)
  assert not problems, "\n".join(problems)


def test_no_import_cycles_between_vdit_modules():
  problems = import_cycles(REPO)
  assert not problems, "\n".join(problems)


def test_packages_have_docstrings_and_layers_and_the_top_stays_small():
  problems = package_problems(REPO)
  assert not problems, "\n".join(problems)


def test_ml_collections_stays_at_the_config_boundary():
  problems = ml_collections_outside_boundary(REPO)
  assert not problems, "\n".join(problems)


def test_each_check_catches_its_violation(tmp_path):
  """A small tree with one of each violation: every check above can fail."""
  files = {
      "vdit/__init__.py": "",
      "vdit/main.py": "from vdit.training import loop\nimport ml_collections\n",  # commands import anything
      "vdit/core/__init__.py": '"""Core."""\n',
      "vdit/core/a.py": "def f():\n  from vdit.model import b\n",  # a lower layer, in a function
      "vdit/core/c.py": "from . import a\nfrom vdit.core import d\n",
      "vdit/core/d.py": "def g():\n  import vdit.core.c\n",  # c -> d -> c, in a function
      "vdit/model/__init__.py": "",  # no docstring
      "vdit/model/b.py": "import configs.toy\nfrom ml_collections import config_dict\n",
      "vdit/training/__init__.py": '"""Training."""\n',
      "vdit/training/loop.py": "from vdit import m0\n",
      "vdit/extra/__init__.py": '"""Not in LAYERS."""\n',
      "vdit/media/__init__.py": '"""Media."""\n',
      "vdit/parallel/__init__.py": '"""Parallel."""\n',
      "vdit/parallel/p.py": "from vdit.media import w\n",  # a layer-mate
      **{f"vdit/m{i}.py": "" for i in range(8)},
  }
  for name, text in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  root = str(tmp_path)
  layers = "\n".join(layer_violations(root))
  assert "vdit/core/a.py:2: `from vdit.model import b`: vdit.core (layer 0)" in layers
  assert "vdit/model/b.py:1: `import configs.toy`: vdit never imports" in layers
  assert "vdit/parallel/p.py:1: `from vdit.media import w`: vdit.parallel (layer 1)" in layers
  assert "vdit/training/loop.py:1: `from vdit import m0`: vdit.training imports vdit.m0 from the top" in layers
  assert not [p for p in layer_violations(root) if p.startswith("vdit/main.py")]  # commands import anything
  assert import_cycles(root) == ["import cycle (no vdit module may import itself back): "
                                 "vdit/core/c.py:2 `from vdit.core import d` -> vdit/core/d.py:2 `import vdit.core.c`"]
  packages = "\n".join(package_problems(root))
  assert "vdit/model/__init__.py: every package" in packages and "vdit/core/__init__" not in packages
  assert "vdit/extra/: package in no layer" in packages and "LAYERS names vdit.interop" in packages
  assert "vdit/ holds 9 modules at its top" in packages
  assert [p.split(":")[0] for p in ml_collections_outside_boundary(root)] == ["vdit/model/b.py"]
