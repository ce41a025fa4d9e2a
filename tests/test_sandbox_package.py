"""The sandbox package's shape: the programs that run inside the sandbox ship as files, are valid Python that uses
only the standard library and runs nothing on import, and `rlvr.sandbox` sits below the tools and the verifiers."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import rlvr.sandbox
from rlvr.sandbox import HARNESS_FILES, read_program
from rlvr.sandbox.programs import PROTOCOL_FILE

SANDBOX_DIR = Path(rlvr.sandbox.__file__).parent
# (package, file) of every program passed to a sandboxed interpreter as source text.
PROGRAMS = [
    ("rlvr.sandbox", "bootstrap.py"),
    ("rlvr.sandbox", PROTOCOL_FILE),
    ("rlvr.rewards", "code_harness.py"),
    ("rlvr.tools", "python_harness.py"),
]
HARNESSES = [program for program in PROGRAMS if program[1].endswith("_harness.py")]
PROTOCOL_MODULE = Path(PROTOCOL_FILE).stem
HIGHER_LAYERS = ("rlvr.tools", "rlvr.rewards", "rlvr.envs")


def tree(package: str, name: str) -> ast.Module:
    return ast.parse(read_program(package, name), filename=name)


def imported_modules(module: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("package", "name"), PROGRAMS)
def test_program_ships_in_its_package_as_valid_python(package: str, name: str) -> None:
    resource = resources.files(package).joinpath(name)
    assert resource.is_file()
    tree(package, name)
    # A module of the package, so `[tool.setuptools.packages.find]` puts it in the wheel like any other.
    spec = importlib.util.find_spec(f"{package}.{Path(name).stem}")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).resolve() == Path(str(resource)).resolve()


@pytest.mark.parametrize(("package", "name"), PROGRAMS)
def test_program_uses_only_the_standard_library(package: str, name: str) -> None:
    # The bootstrap runs under `-I -S`, the harnesses under `-s -S`: nothing outside the standard library is there,
    # except the protocol module that travels beside the harnesses.
    outside = {module for module in imported_modules(tree(package, name)) if module.split(".")[0] not in sys.stdlib_module_names}
    assert outside <= {PROTOCOL_MODULE}, outside


@pytest.mark.parametrize(("package", "name"), PROGRAMS)
def test_program_runs_nothing_at_import(package: str, name: str) -> None:
    """At the top level only imports, definitions, constants and the `if __name__ == "__main__":` entry point."""
    for node in tree(package, name).body:
        if isinstance(node, ast.If):
            test = node.test
            assert isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            assert isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value == "__main__"
        else:
            allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            assert isinstance(node, allowed) or docstring, ast.dump(node)[:200]


def test_importing_the_bootstrap_and_the_protocol_does_nothing() -> None:
    # Run as a program, the bootstrap would read its config from argv[1] and fail without one.
    code = "import rlvr.sandbox.bootstrap, rlvr.sandbox.harness_protocol"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize(("package", "name"), HARNESSES)
def test_harnesses_share_the_protocol_file_that_travels_with_them(package: str, name: str) -> None:
    assert PROTOCOL_MODULE in imported_modules(tree(package, name))
    assert dict(HARNESS_FILES) == {PROTOCOL_FILE: read_program("rlvr.sandbox", PROTOCOL_FILE)}


def test_importing_the_sandbox_imports_none_of_its_users() -> None:
    code = f"import rlvr.sandbox, sys; print([m for m in sys.modules if m.startswith({HIGHER_LAYERS!r})])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("path", sorted(SANDBOX_DIR.glob("*.py")), ids=lambda path: path.name)
def test_no_sandbox_module_imports_its_users(path: Path) -> None:
    # Covers modules `import rlvr.sandbox` does not load, such as the CLI.
    imports = imported_modules(ast.parse(path.read_text(encoding="utf-8")))
    assert not [name for name in imports if name.startswith(HIGHER_LAYERS)]
