"""What a result was measured on, so that it names exactly its model, data and software."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from rlvr.types import Problem

PACKAGES = ("rlvr", "torch", "transformers", "math-verify", "reasoning-gym", "numpy")


def question_id(problem: Problem) -> str:
    """Stable across runs and machines, so two runs can be paired question by question."""
    return hashlib.sha256(f"{problem.subset}\n{problem.question}".encode()).hexdigest()[:16]


def data_hash(problems: Sequence[Problem]) -> str:
    digest = hashlib.sha256()
    for problem in problems:
        digest.update(json.dumps([problem.subset, problem.question, problem.answer, problem.verifier]).encode())
    return digest.hexdigest()


def model_hash(folder: Path) -> str:
    """SHA-256 over the weight files (names and bytes), so a result names exactly the weights it measured."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found
