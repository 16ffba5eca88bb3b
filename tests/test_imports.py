"""The import rules of DESIGN section 1, checked from the source alone (no import-linter, no torch).

`lint-imports` (pyproject's [tool.importlinter], run by `make lint`) checks the same layers; this
file keeps the rules honest in any plain venv, and adds the one its contracts do not state: no import
cycle between any two modules. Every `import` statement counts, wherever it sits in a module (top
level, function body, `if TYPE_CHECKING:`): an import inside a function that closes a cycle is still
a cycle, it only moves the failure from import time to call time.

Not seen: modules named by a string and loaded with `importlib.import_module`, i.e. the registries'
lazy tables (dataset sources, cli/app.py's COMMAND_MODULES). A source registers itself by importing
its registry, which loads it by name on first lookup: the decorator-registry pattern, on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "gesture_cli"

# The only modules allowed to import gesture_cli.cli from outside it: `python -m gesture_cli`. The
# console script (`gx = "gesture_cli.cli.app:main"` in pyproject.toml) is not a module, so it needs no entry.
ENTRY_POINTS = {"gesture_cli.__main__"}

# DESIGN section 1, top to bottom: a module may import its own layer and the layers below it.
LAYERS = (
    ("cli",),
    ("tasks",),
    ("train", "eval", "viz"),
    ("models", "data"),
    ("core",),
)
OUTSIDE_LAYERS = {"gesture_cli", "gesture_cli.__main__"}  # the package root (__version__) and the entry point

# Layers that must stay pure: metrics (eval) and drawings (viz) take arrays and return numbers or
# pictures, so they never reach up into training, tasks or the command line, not even beside them.
PURE = ("gesture_cli.eval", "gesture_cli.viz")
ABOVE_PURE = ("gesture_cli.train", "gesture_cli.tasks", "gesture_cli.cli")

# A command parses options, calls one tasks function and prints its summary: cli reaches the layers
# below tasks only through tasks (core, with the run dir, config and errors, it uses directly).
CLI = ("gesture_cli.cli",)
BELOW_TASKS = ("gesture_cli.train", "gesture_cli.eval", "gesture_cli.viz", "gesture_cli.models", "gesture_cli.data")


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` under `root` -> its file; a package is named by its __init__.py."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that `name` starts with (`a.b.func` -> `a.b`), or None if outside."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `module` imports anywhere in its source.

    `from pkg import sub` counts as importing `pkg.sub` when `sub` is a module, else as importing `pkg`
    (a name defined in pkg/__init__.py). Relative imports are resolved against the module's package.
    """
    is_package = path.name == "__init__.py"
    # the package that a relative import of level 1 starts from
    here = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(_resolve(alias.name, known))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(p for p in [*base_parts, node.module or ""] if p)
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else _resolve(base, known))
    found.discard(None)
    found.discard(module)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (edges inside `package` only)."""
    modules = module_names(root, package)
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def describe_cycle(graph: dict[str, set[str]], component: list[str]) -> str:
    """'cycle: a -> b; b -> a': the imports inside one strongly connected component."""
    members = set(component)
    return "cycle: " + "; ".join(f"{a} -> {b}" for a in component for b in sorted(graph[a] & members))


def imports_into(graph: dict[str, set[str]], targets: tuple[str, ...], *, sources: tuple[str, ...] | None = None,
                 exempt: set[str] | tuple[str, ...] = ()) -> list[str]:
    """'src -> dst' for each import of a module under `targets` by a module under `sources` (None: any
    module outside `targets`), `exempt` modules left out."""
    return [
        f"{src} -> {dst}"
        for src, found in sorted(graph.items())
        if src not in exempt and (_within(src, sources) if sources is not None else not _within(src, targets))
        for dst in sorted(found)
        if _within(dst, targets)
    ]


def layer_of(module: str) -> int | None:
    """Index in LAYERS (0 = top) of a module's top-level part; None for the package root and the entry point."""
    top = module.split(".")[1] if module.count(".") else None
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'src -> dst' for each import of a higher layer by a lower one."""
    return [
        f"{src} -> {dst}"
        for src, found in sorted(graph.items())
        for dst in sorted(found)
        if layer_of(src) is not None and layer_of(dst) is not None and layer_of(dst) < layer_of(src)
    ]


# --- the rules, on gesture_cli itself ---------------------------------------------------------------

@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(REPO, PACKAGE)


def test_graph_sees_the_package(graph):
    # guards the rules below against passing on an empty or wrongly rooted graph
    assert "gesture_cli.cli.app" in graph and "gesture_cli.core.rundir" in graph
    assert "gesture_cli.cli.app" in graph["gesture_cli.__main__"]
    assert sum(len(found) for found in graph.values()) > 100


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "\n".join(describe_cycle(graph, c) for c in found)


def test_nothing_but_the_entry_point_imports_cli(graph):
    offenders = imports_into(graph, ("gesture_cli.cli",), exempt=ENTRY_POINTS)
    assert not offenders, "only the entry point may import gesture_cli.cli:\n" + "\n".join(offenders)


def test_console_script_is_the_cli_entry_point(graph):
    # the second entry point, `gx`: it must point into cli/, which the rule above lets import itself
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["gx"].partition(":")
    assert (module, func) == ("gesture_cli.cli.app", "main") and module in graph


def test_import_linter_contracts_name_the_same_layers():
    # `make lint` checks pyproject's contracts, this file checks LAYERS: the two must not drift apart
    tomllib = pytest.importorskip("tomllib")
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    parsed = [{name.strip().strip("()") for name in layer.replace("|", ":").split(":")} for layer in layers]
    assert parsed == [set(names) for names in LAYERS]


def test_every_module_sits_in_a_layer(graph):
    # a new top-level module or package must be placed in LAYERS (and in pyproject's contracts), or no
    # layer rule would apply to it
    strays = sorted(m for m in graph if m not in OUTSIDE_LAYERS and layer_of(m) is None)
    assert not strays, f"modules outside every layer of DESIGN section 1: {strays}"


def test_layers_only_import_downwards(graph):
    offenders = upward_imports(graph)
    assert not offenders, "a lower layer imports a higher one (cli > tasks > train|eval|viz > models|data > core):\n" + "\n".join(offenders)


def test_cli_imports_only_tasks_and_core(graph):
    offenders = imports_into(graph, BELOW_TASKS, sources=CLI)
    assert not offenders, "cli/ may import only tasks/ and core/ (and itself):\n" + "\n".join(offenders)


def test_eval_and_viz_stay_pure(graph):
    offenders = imports_into(graph, ABOVE_PURE, sources=PURE)
    assert not offenders, "eval/ and viz/ must not import train/, tasks/ or cli/:\n" + "\n".join(offenders)


# --- the checker itself, on a small synthetic package -------------------------------------------------

def _write_package(root: Path, files: dict[str, str]) -> None:
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)


def test_graph_resolves_every_import_form(tmp_path):
    _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\nfrom pkg import c\nfrom pkg.d import helper\nimport json\n",
        "pkg/b.py": "from . import c\nfrom .sub import e\n",
        "pkg/c.py": "def f():\n    from pkg.sub.e import thing  # inside a function\n",
        "pkg/d.py": "from pkg import VERSION  # a name of pkg/__init__, not a module\n",
        "pkg/sub/__init__.py": "from .e import thing\n",
        "pkg/sub/e.py": "from ..d import helper\nfrom .. import c\n",
    })
    g = import_graph(tmp_path, "pkg")
    assert g["pkg.a"] == {"pkg.b", "pkg.c", "pkg.d"}  # json is outside the package: no edge
    assert g["pkg.b"] == {"pkg.c", "pkg.sub.e"}
    assert g["pkg.c"] == {"pkg.sub.e"}
    assert g["pkg.d"] == {"pkg"}
    assert g["pkg.sub"] == {"pkg.sub.e"}
    assert g["pkg.sub.e"] == {"pkg.d", "pkg.c"}


def test_cycle_closed_inside_a_function_is_found(tmp_path):
    # the shape of the five cycles issue #16 measured: a top-level import one way, a lazy one back
    _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "def load():\n    from pkg.high import parse\n    return parse\n",
        "pkg/high.py": "from pkg.low import load\n\ndef parse():\n    return load\n",
        "pkg/x.py": "from pkg import y\n",
        "pkg/y.py": "from pkg import z\n",
        "pkg/z.py": "import pkg.x\n",
        "pkg/leaf.py": "from pkg import low\n",
    })
    g = import_graph(tmp_path, "pkg")
    assert cycles(g) == [["pkg.high", "pkg.low"], ["pkg.x", "pkg.y", "pkg.z"]]
    assert describe_cycle(g, ["pkg.high", "pkg.low"]) == "cycle: pkg.high -> pkg.low; pkg.low -> pkg.high"


def test_acyclic_package_has_no_cycles(tmp_path):
    _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/core.py": "",
        "pkg/mid.py": "from pkg import core\n",
        "pkg/top.py": "from pkg import core, mid\n\ndef f():\n    from pkg.mid import g\n",
    })
    assert cycles(import_graph(tmp_path, "pkg")) == []


def test_rule_checks_flag_what_they_forbid():
    # the same shapes as the rules above, on a made-up graph with one violation of each
    g = {
        "gesture_cli.__main__": {"gesture_cli.cli.app"},
        "gesture_cli.cli.app": {"gesture_cli.cli.options", "gesture_cli.tasks.classify", "gesture_cli.train.lora"},
        "gesture_cli.cli.options": set(),
        "gesture_cli.tasks.demo": {"gesture_cli.cli.app", "gesture_cli.data.pose"},
        "gesture_cli.tasks.classify": {"gesture_cli.train.lora", "gesture_cli.core.errors"},
        "gesture_cli.train.lora": {"gesture_cli.eval.classify", "gesture_cli.models.lora"},
        "gesture_cli.eval.classify": {"gesture_cli.viz.plots"},
        "gesture_cli.eval.keypoint": {"gesture_cli.train.keypoint"},
        "gesture_cli.viz.plots": {"gesture_cli.core.errors"},
        "gesture_cli.models.lora": {"gesture_cli.data.pose"},
        "gesture_cli.data.pose": {"gesture_cli.models.skeletons"},
        "gesture_cli.core.errors": {"gesture_cli.data.pose"},
    }
    assert imports_into(g, ("gesture_cli.cli",), exempt=ENTRY_POINTS) == ["gesture_cli.tasks.demo -> gesture_cli.cli.app"]
    assert imports_into(g, ABOVE_PURE, sources=PURE) == ["gesture_cli.eval.keypoint -> gesture_cli.train.keypoint"]
    # cli -> tasks is the way down; cli -> train skips it
    assert imports_into(g, BELOW_TASKS, sources=CLI) == ["gesture_cli.cli.app -> gesture_cli.train.lora"]
    # train -> eval is the same layer, models <-> data too; core -> data and tasks -> cli go upwards
    assert upward_imports(g) == ["gesture_cli.core.errors -> gesture_cli.data.pose", "gesture_cli.tasks.demo -> gesture_cli.cli.app"]
    assert [layer_of(m) for m in ("gesture_cli.cli.app", "gesture_cli.tasks.demo", "gesture_cli.eval.scene", "gesture_cli.core", "gesture_cli")] == [
        0, 1, 2, 4, None]
