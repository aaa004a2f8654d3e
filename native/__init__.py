"""segd's Cython core: columnar kernels, bitsets, postings and the id map.

Other Cython code can ``cimport segd.native.bitset`` (inline kernels) and
``segd.native._types``; ``get_include()`` gives the directory to put on Cython's include
path, as ``numpy.get_include()`` does for numpy's headers.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MAX_SEC", "NO_CODE", "get_include"]


def __getattr__(name: str) -> int:
    """``NO_CODE`` and sizes, from their one definition in ``_types.pxd`` (through the
    compiled ``segd.native.constants``; imported lazily so that ``get_include`` works
    before the extensions are built)."""
    if name in ("NO_CODE", "MAX_CODE", "MAX_CID", "MAX_SEC"):
        from segd.native import constants

        return int(getattr(constants, name))
    raise AttributeError(f"module 'segd.native' has no attribute {name!r}")


def get_include() -> str:
    """The include root under which ``segd/native/*.pxd`` are found.

    Installed from a wheel this is the site-packages directory itself; in an editable
    install the repository's ``native/`` folder is mapped there by setup.py's
    ``build/cython-include`` symlink.
    """
    here = Path(__file__).resolve().parent
    if here.parent.name == "segd":
        return str(here.parent.parent)
    mapped = here.parent / "build" / "cython-include"
    if (mapped / "segd" / "native").exists():
        return str(mapped)
    raise FileNotFoundError(
        "segd's .pxd files are not laid out as segd/native/: rebuild with "
        "`pip install -e .` (it creates build/cython-include)"
    )
