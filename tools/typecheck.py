"""Run mypy on the ``segd`` package as it is installed: ``python tools/typecheck.py``.

Why a wrapper: the repository keeps the design card's folders (engine/ native/ server/
bench/ proto/segd/v1) and pyproject's ``[tool.setuptools.package-dir]`` maps them onto one
import name, ``segd``. mypy finds modules by path and does not run setuptools' editable
import hook, so neither ``mypy engine`` (it would call the modules ``engine.*``) nor ``mypy -p
segd`` (nothing named segd/ on disk) type-checks the package that ``import segd`` loads.

This script lays the mapping out as a tree of symlinks, ``build/typecheck/segd/`` (one per
entry of engine/, plus ``native``, ``server``, ``bench`` and ``v1`` from package-dir), which
``[tool.mypy] mypy_path`` points at, then runs mypy with pyproject's ``[tool.mypy]`` settings
(``packages = ["segd"]``) and any extra arguments given, and prints every path as the real
file (``engine/core.py``, not ``build/typecheck/segd/core.py``). The tree is rebuilt on each
run, so modules added since the last one are checked too.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"
PACKAGE = "segd"


def build_tree() -> Path:
    """(Re)create build/typecheck/segd/ from pyproject's package-dir mapping."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = pyproject["tool"]["setuptools"]["package-dir"]
    top = TREE / PACKAGE
    if TREE.exists():
        shutil.rmtree(TREE)
    top.mkdir(parents=True)
    for entry in sorted((ROOT / mapping[PACKAGE]).iterdir()):
        if entry.name != "__pycache__":
            (top / entry.name).symlink_to(entry)
    for name, folder in sorted(mapping.items()):
        if name == PACKAGE:
            continue
        sub = name.removeprefix(PACKAGE + ".")
        if "." in sub or (top / sub).exists():
            sys.exit(f"typecheck: cannot map {name} -> {folder} into {top}")
        (top / sub).symlink_to(ROOT / folder)
    return top


def real_paths(text: str) -> str:
    """build/typecheck/segd/x.py -> the file it links to, relative to the repository."""
    prefix = re.escape(str(TREE.relative_to(ROOT)) + os.sep)

    def repl(match: re.Match[str]) -> str:
        real = Path(os.path.realpath(ROOT / match.group(0)))
        try:
            return str(real.relative_to(ROOT))
        except ValueError:
            return str(real)

    return re.sub(rf"(?m)(?<![\w/]){prefix}[^\s:]+", repl, text)


def main(argv: list[str]) -> int:
    from mypy import api

    build_tree()
    os.chdir(ROOT)
    stdout, stderr, status = api.run(argv)
    sys.stdout.write(real_paths(stdout))
    sys.stderr.write(real_paths(stderr))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
