"""Benchmark-only third-party packages: install into bench/.deps and load without shadowing ours.

Anchors such as ``psec`` or ``pyiso8583`` are not project dependencies. They are
pip-installed with ``--target bench/.deps/<name>`` (gitignored) by the running
interpreter (the project venv), once. ``pyiso8583`` imports as ``iso8583``,
the same name as this project's package, so :func:`load_isolated` imports it
under an alias with a temporary ``sys.path``/``sys.modules`` swap and then
restores both, leaving ``import iso8583`` pointing at ours.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

DEPS_ROOT = Path(__file__).resolve().parent / ".deps"


class BenchDependencyError(RuntimeError):
    """A benchmark-only package could not be installed or loaded."""


def _dir_name(package_spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", package_spec)


def ensure(package_spec: str, import_name: str, *, no_deps: bool = False) -> Path:
    """Install ``package_spec`` into ``bench/.deps/<spec>`` unless present; return that directory.

    ``import_name`` is the top-level module the package provides; its presence
    in the directory means the install is done. ``no_deps`` skips dependencies
    that the venv already has (``psec`` would otherwise bring a second
    ``cryptography``).
    """
    target = DEPS_ROOT / _dir_name(package_spec)
    # The marker is written only after pip succeeded: an interrupted install
    # is redone, not mistaken for a finished one.
    marker = target / ".installed"
    if marker.exists() and _has_module(target, import_name):
        return target
    target.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--upgrade", "--retries", "1", "--timeout", "20", "--target", str(target),
    ]
    if no_deps:
        cmd.append("--no-deps")
    cmd.append(package_spec)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise BenchDependencyError(f"cannot install {package_spec}: {last}")
    if not _has_module(target, import_name):
        raise BenchDependencyError(f"{package_spec} installed no module named {import_name}")
    marker.write_text(package_spec + "\n", encoding="utf-8")
    return target


def _has_module(target: Path, import_name: str) -> bool:
    return (target / import_name).is_dir() or (target / f"{import_name}.py").is_file()


def load_isolated(target_dir: Path, module_name: str, alias: str) -> ModuleType:
    """Import ``module_name`` from ``target_dir`` only, register it as ``alias``, and return it.

    While importing, ``sys.path`` starts with ``target_dir`` and any already
    imported ``module_name`` (and its submodules) are set aside; all of the
    package's submodules are imported eagerly; afterwards the
    freshly imported modules are renamed ``alias``/``alias.sub`` in
    ``sys.modules`` and the originals are put back.
    """
    if alias in sys.modules:
        return sys.modules[alias]
    prefix = module_name + "."

    def ours(name: str) -> bool:
        return name == module_name or name.startswith(prefix)

    saved = {name: mod for name, mod in sys.modules.items() if ours(name)}
    saved_path = list(sys.path)
    for name in saved:
        del sys.modules[name]
    try:
        sys.path.insert(0, str(target_dir))
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
        origin = Path(getattr(module, "__file__", "") or "").resolve()
        if target_dir.resolve() not in origin.parents:
            raise BenchDependencyError(f"{module_name} did not load from {target_dir}")
        # Import every submodule now, while the name still means theirs: a
        # later lazy import of one would resolve their absolute imports to ours.
        # __main__ modules run programs on import and are left out.
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix):
            if not info.name.endswith(".__main__"):
                importlib.import_module(info.name)
        loaded = {name: mod for name, mod in sys.modules.items() if ours(name)}
    finally:
        sys.path[:] = saved_path
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
    for name, mod in loaded.items():
        sys.modules[alias + name[len(module_name):]] = mod
    return module
