"""`rlvr sandbox run FILE.py`: run one Python file in the sandbox and print the result as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlvr.sandbox.limits import SandboxLimits
from rlvr.sandbox.run import run_file

sandbox_app = typer.Typer(help="Run untrusted Python in the hardened sandbox.", no_args_is_help=True, add_completion=False)


@sandbox_app.callback()
def _group() -> None:
    """Run untrusted Python in the hardened sandbox."""
    # A callback keeps `run` a named subcommand even while it is the only one, so that
    # `sandbox_app` alone and `rlvr sandbox` take the same arguments.


@sandbox_app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Python file to run", metavar="FILE.py")],
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Wall-clock and CPU limit in seconds")] = 10.0,
    memory_mb: Annotated[int, typer.Option("--memory-mb", min=32, help="Address-space limit in MiB")] = 512,
) -> None:
    """Run FILE.py in the sandbox; print stdout, stderr, exit code and limits hit as one JSON object."""
    if not file.is_file():
        typer.echo(f"error: {file}: no such file", err=True)
        raise typer.Exit(2)
    limits = SandboxLimits(wall_seconds=timeout, cpu_seconds=timeout, memory_mb=memory_mb)
    try:
        result = run_file(file, limits)
    except (OSError, UnicodeDecodeError) as error:
        typer.echo(f"error: {file}: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.to_json())
