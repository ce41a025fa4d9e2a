"""Plugins: user modules that extend rlvr without editing it.

`plugins: [my_rewards.py, mypackage.envs]` in a recipe (or `--plugin` on the command line) names Python files or
importable modules. Importing one runs rlvr's own decorators in it (`@register_verifier`, `@REWARDS.register`,
`@ENVIRONMENTS.register`, `@POLICY_LOSSES.register`, `@ADVANTAGES.register`, `@tool`, ...), so the names it
registers exist before the config is validated and are valid choices in it (`env.rewards: {my_reward: 1.0}`).

A file is imported under its own stem as module name, once per process however often a config is loaded, and
the scoring workers (fresh `spawn` processes) import the same plugins before their first task: their rubric
names the plugin's functions by module, as pickle does.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from rlvr.errors import ConfigError

# spec as given (a resolved file path or a module name) -> the module it was imported as, in import order
_LOADED: dict[str, str] = {}


def is_plugin_file(spec: str) -> bool:
    return spec.endswith(".py")


def anchor_plugin(spec: str, folder: Path) -> str:
    """A plugin file named relative to the recipe that lists it is relative to the recipe's folder (module names
    stay as they are)."""
    if is_plugin_file(spec) and not Path(spec).is_absolute():
        return str((folder / spec).resolve())
    return spec


def _where(error: BaseException, spec: str) -> str:
    """The plugin's own line that raised, when the error comes from inside it: `file:line`."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if is_plugin_file(spec) and f.filename == spec]
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _import_file(path: Path) -> str:
    name = path.stem
    if not name.isidentifier():
        raise ConfigError(f"plugins: {path}: the file name must be a Python identifier (it becomes the module name)")
    existing = sys.modules.get(name)
    if existing is not None:
        origin = getattr(existing, "__file__", None)
        raise ConfigError(f"plugins: {path}: module name {name!r} is already taken (by {origin or 'a built-in module'})")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plugins: {path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before executing it, as `import` does: a dataclass or pickle in it looks itself up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return name


def load_plugins(specs: Sequence[str]) -> None:
    """Import each plugin once (a `.py` file path or a module name); an error names the plugin and what failed."""
    for spec in specs:
        if not isinstance(spec, str) or not spec:
            raise ConfigError(f"plugins: expected a file (.py) or a module name (got {spec!r})")
        key = str(Path(spec).resolve()) if is_plugin_file(spec) else spec
        if key in _LOADED:
            continue
        try:
            if is_plugin_file(spec):
                if not Path(key).is_file():
                    raise ConfigError(f"plugins: {spec}: no such file")
                name = _import_file(Path(key))
            else:
                importlib.import_module(spec)
                name = spec
        except ConfigError:
            raise
        except Exception as error:
            raise ConfigError(f"plugins: {spec}: cannot import: {type(error).__name__}: {error}{_where(error, key)}") from None
        _LOADED[key] = name


def loaded_plugins() -> list[str]:
    """The plugins this process imported, in order: what a child process imports to see the same registries."""
    return list(_LOADED)
