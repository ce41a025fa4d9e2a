"""Programs that run inside the sandbox, kept as real files in the packages that own them.

They are ordinary, linted Python files shipped with the package, read once per process and passed to the child as
source text: the bootstrap (`bootstrap.py`) as the launcher's `-c` program, a harness as `main.py`. Harnesses that
report to the host on a nonce-keyed line share `harness_protocol.py`, which travels beside them as one more file
(`HARNESS_FILES`) and which they import by its file name.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

__all__ = ["HARNESS_FILES", "PROTOCOL_FILE", "read_program"]


def read_program(package: str, name: str) -> str:
    """The source of the program file ``name`` inside ``package`` (e.g. ``"rlvr.sandbox"``, ``"bootstrap.py"``)."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


PROTOCOL_FILE = "harness_protocol.py"

# Pass as `run_python(harness, files=HARNESS_FILES)`: the harness imports the protocol from beside `main.py`.
HARNESS_FILES: Mapping[str, str] = MappingProxyType({PROTOCOL_FILE: read_program("rlvr.sandbox", PROTOCOL_FILE)})
