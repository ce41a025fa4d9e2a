"""The shape of the code: rlvr's import graph, read from the source with `ast`, has no cycle and runs one way
down through the layers of the README's architecture section, and no file grows past what one reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src"
MAX_LINES = 600

# The layers of the README's architecture section, bottom to top: a module may import from its own layer and the
# ones below, never above (at the top of a file, inside a function or under `if TYPE_CHECKING:` alike: a type-only
# import still ties two layers together). Every module must be placed, so a new one gets a layer on purpose.
LAYERS = [
    ("types", ["rlvr.types", "rlvr.errors", "rlvr.registry", "rlvr.cache"]),
    (
        "config",
        [
            "rlvr.config",
            "rlvr.env_config",
            "rlvr.algo_config",
            "rlvr.rollout_config",
            "rlvr.stage_config",
            "rlvr.data",
            "rlvr.step_metrics",
            "rlvr.reasoning_diagnostics",
            "rlvr.curriculum",
            "rlvr.length_control",
            "rlvr.seeds",
            "rlvr.hardware",
            "rlvr.models",
            "rlvr.plugins",
        ],
    ),
    ("sandbox", ["rlvr.sandbox"]),
    ("rewards", ["rlvr.rewards", "rlvr.scoring"]),
    ("envs", ["rlvr.envs"]),
    ("tools", ["rlvr.tools"]),
    ("rollout", ["rlvr.rollout"]),
    ("eval", ["rlvr.eval", "rlvr.sft", "rlvr.rejection", "rlvr.progress"]),
    (
        "trainer",
        [
            "rlvr.trainer",
            "rlvr.sft.trainer",
            "rlvr.learner",
            "rlvr.lm_head",
            "rlvr.algos",
            "rlvr.checkpoint",
            "rlvr.metrics",
            "rlvr.trackers",
            "rlvr.optimizers",
            "rlvr.distributed",
            "rlvr.memory",
            "rlvr.guard",
        ],
    ),
    ("cluster", ["rlvr.cluster"]),  # rollout workers beside the learner, and the trainer that feeds on them
    (
        "commands",
        [
            "rlvr.__main__",
            "rlvr.api",
            "rlvr.cli",
            "rlvr.controls",
            "rlvr.run",
            "rlvr.pipeline",
            "rlvr.jobs",
            "rlvr.report",
            "rlvr.assistant",
            "rlvr.chat_view",
            "rlvr.serve",
        ],
    ),
]


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module under src/ (a package is its `__init__.py`). Not the recipes'
    data scripts (they are not part of rlvr's code), nor the root `rlvr/__init__.py`, the lazy API facade that
    imports nothing of rlvr until an attribute is asked for (`test_the_root_package_imports_nothing_of_rlvr`)."""
    modules = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[:2] == ["rlvr", "recipes"] or parts == ["rlvr", "__init__"]:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name an import statement anywhere in the file may refer to (`from a import b` -> a, a.b)."""
    names: set[str] = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """Module -> the rlvr modules importing it runs. Importing `a.b.c` also runs the `__init__` of `a` and `a.b`,
    except those the importer is itself inside (they are already running when it is imported)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        edges: set[str] = set()
        for name in imported_names(module, path):
            if name not in files:
                continue
            own = set(ancestors(module))
            edges.update(a for a in [*ancestors(name), name] if a in files and a not in own)
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_relative_deferred_and_type_only_imports(tmp_path):
    source = tmp_path / "pkg"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "__init__.py").write_text("")
    (source / "sub" / "a.py").write_text("from . import b\n")
    (source / "sub" / "b.py").write_text("if TYPE_CHECKING:\n    from pkg.c import X\n")
    (source / "c.py").write_text("def f():\n    from .sub import a\n")
    names = imported_names("pkg.c", source / "c.py")
    assert "pkg.sub" in names and "pkg.sub.a" in names
    assert "pkg.sub.b" in imported_names("pkg.sub.a", source / "sub" / "a.py")
    assert "pkg.c" in imported_names("pkg.sub.b", source / "sub" / "b.py")


def test_rlvr_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the module's layer (its longest matching prefix), or None when it has none."""
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes if under(module, prefix)]
    return max(matches)[1] if matches else None


def under(name: str, prefix: str) -> bool:
    """`rlvr.tools.base` is under `rlvr.tools`; `rlvr.toolsx` is not."""
    return name == prefix or name.startswith(prefix + ".")


def test_every_module_has_a_layer():
    assert [module for module in module_files() if layer_of(module) is None] == []


def test_layers_import_downwards_only():
    upward = sorted(
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in import_graph().items()
        for target in targets
        if (layer_of(target) or 0) > (layer_of(module) or 0)
    )
    assert not upward, "\n".join(upward)


def test_the_layer_check_catches_an_upward_import():
    assert layer_of("rlvr.rewards.code") < layer_of("rlvr.tools.builtin") < layer_of("rlvr.rollout.sampler")
    assert layer_of("rlvr.types") == 0 and layer_of("rlvr.sandbox.cli") == 2 and layer_of("rlvr.toolsx") is None


def test_no_source_file_is_longer_than_one_reader_can_hold():
    long = {
        str(path.relative_to(SOURCE)): n
        for path in module_files().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_the_root_package_imports_nothing_of_rlvr():
    root = SOURCE / "rlvr" / "__init__.py"
    assert not {name for name in imported_names("rlvr", root) if name == "rlvr" or name.startswith("rlvr.")}
