"""rlvr as a real package: the built wheel works from any folder (recipes and their data are package data),
`python -m rlvr` runs, and the command line answers without importing torch, transformers or vLLM."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "vllm")


def _python(code: str, cwd: Path, path: Path | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(path)} if path else dict(os.environ)
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_the_command_line_and_the_api_import_nothing_heavy_until_used(tmp_path):
    code = (
        "import sys, rlvr, rlvr.cli\n"
        "from typer.testing import CliRunner\n"
        "assert CliRunner().invoke(rlvr.cli.app, ['--help']).exit_code == 0\n"
        "assert callable(rlvr.train) and callable(rlvr.evaluate)\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
        "assert rlvr.load_config('default').name == 'default'  # validating names asks the registries: torch loads"
    )
    assert _python(code, tmp_path) == "[]"


def test_python_dash_m_rlvr_runs_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rlvr", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "train" in done.stdout and "eval" in done.stdout


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` builds, unpacked as pip would install it (pure Python: a wheel is its install tree).
    Built from a copy of the sources: setuptools keeps `build/` between builds, and a file a stale build left there
    would end up in the wheel whatever the package data says."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)]
    done = subprocess.run(build, capture_output=True, text=True, timeout=300, cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = out.glob("rlvr-*.whl")
    target = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def test_the_wheel_holds_the_recipes_and_finds_them_from_any_folder(installed_wheel, tmp_path):
    code = (
        "import rlvr, rlvr.config as c\n"
        "from pathlib import Path\n"
        f"assert Path(rlvr.__file__).is_relative_to({str(installed_wheel)!r}), rlvr.__file__\n"
        "names = sorted(p.stem for p in c.RECIPES_DIR.glob('*.yaml'))\n"
        "mixture = c.load_config('mixture')\n"
        "files = [s.path for s in mixture.env.sources if s.path.endswith('.jsonl')]\n"
        "assert files and all(Path(f).is_file() and Path(f).is_relative_to(c.RECIPES_DIR) for f in files), files\n"
        "demos = c.load_config('python-math').env.demos\n"
        "assert Path(demos).is_file(), demos\n"
        "print(names)"
    )
    shipped = _python(code, tmp_path, installed_wheel)
    assert shipped == str(sorted(p.stem for p in (ROOT / "src" / "rlvr" / "recipes").glob("*.yaml")))


def test_the_wheel_carries_the_sandbox_programs(installed_wheel, tmp_path):
    code = (
        "from rlvr.sandbox import HARNESS_FILES, SandboxLimits, run_python\n"
        "result = run_python('print(6 * 7)', limits=SandboxLimits(wall_seconds=30))\n"
        "print(result.stdout.strip(), len(HARNESS_FILES))"
    )
    assert _python(code, tmp_path, installed_wheel) == "42 1"
