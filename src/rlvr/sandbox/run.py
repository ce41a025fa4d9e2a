"""The public entry points: run a piece of Python, or a file, in a fresh sandbox."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from rlvr.sandbox.isolation import select_mode
from rlvr.sandbox.launch import RESERVED, execute
from rlvr.sandbox.limits import SandboxLimits, SandboxResult

__all__ = ["run_file", "run_python"]


def _check_files(files: Mapping[str, str]) -> dict[PurePosixPath, str]:
    checked: dict[PurePosixPath, str] = {}
    for name, content in files.items():
        if not isinstance(name, str) or not isinstance(content, str):
            raise TypeError("files must map relative path strings to text")
        path = PurePosixPath(name)
        if not path.parts or path.is_absolute() or ".." in path.parts or path.parts[0] in RESERVED or "\0" in name:
            raise ValueError(f"invalid sandbox file name {name!r}: relative, no '..', not one of {sorted(RESERVED)}")
        checked[path] = content
    return checked


def run_python(
    code: str, stdin: str = "", limits: SandboxLimits = SandboxLimits(), files: Mapping[str, str] | None = None
) -> SandboxResult:
    """Run ``code`` as ``main.py`` in a fresh sandbox, with ``files`` (relative path -> text) beside it.

    Never raises because of what the code does; raises ``TypeError``/``ValueError`` on bad arguments.
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be str, not {type(code).__name__}")
    if not isinstance(stdin, str):
        raise TypeError(f"stdin must be str, not {type(stdin).__name__}")
    if not isinstance(limits, SandboxLimits):
        raise TypeError(f"limits must be SandboxLimits, not {type(limits).__name__}")
    limits.validate()
    checked = _check_files(files or {})
    return execute(code, stdin, limits, checked, select_mode())


def run_file(path: str | os.PathLike[str], limits: SandboxLimits = SandboxLimits(), stdin: str = "") -> SandboxResult:
    """Run the Python file at ``path`` (read on the host, then copied into the sandbox)."""
    code = Path(path).read_text(encoding="utf-8")
    return run_python(code, stdin=stdin, limits=limits)
