"""Build script: compiles the Cython core (native/) and generates the gRPC stubs (proto/).

Why setup.py next to pyproject.toml: the extension list, the per-build Cython directives and
the protoc step are code, not static metadata. Everything else lives in pyproject.toml.

Environment switches (sklearn / pyroaring habits):
- ``SEGD_CYTHON_DEBUG=1``: bounds and wraparound checks on, ``-O0 -g``: for hunting a crash.
- ``SEGD_MARCH=native``: adds ``-march=native`` (opt-in: the wheel would not run elsewhere).
- ``SEGD_BUILD_JOBS=N``: how many extensions are translated and compiled at once (default:
  every core).
"""

from __future__ import annotations

import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("SEGD_CYTHON_DEBUG") == "1"
# Cython translation and the C compiler run on every core (SEGD_BUILD_JOBS overrides): the
# extensions are independent, and one at a time they were most of a build's ~5 CPU minutes.
JOBS = int(os.environ.get("SEGD_BUILD_JOBS") or os.cpu_count() or 1)


def generate_protos() -> None:
    """Run grpc_tools.protoc on proto/segd/v1/*.proto (stubs are never committed).

    The -I root is proto/, so generated imports read ``from segd.v1 import common_pb2``,
    which resolves through ``package_dir={"segd": "proto/segd"}`` both installed and editable.
    """
    protos = sorted(glob.glob(os.path.join(HERE, "proto", "segd", "v1", "*.proto")))
    if not protos:
        return
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{os.path.join(HERE, 'proto')}",
        f"-I{well_known}",
        f"--python_out={os.path.join(HERE, 'proto')}",
        f"--pyi_out={os.path.join(HERE, 'proto')}",
        f"--grpc_python_out={os.path.join(HERE, 'proto')}",
        *[os.path.relpath(p, os.path.join(HERE, "proto")) for p in protos],
    ]
    cwd = os.getcwd()
    os.chdir(os.path.join(HERE, "proto"))
    try:
        if protoc.main(args) != 0:
            sys.exit("protoc failed on proto/segd/v1/*.proto")
    finally:
        os.chdir(cwd)


def cython_include_root() -> str:
    """A build-time include root in which ``native/`` appears as ``segd/native``.

    The extensions are named ``segd.native.*`` (the installed import path), so Cython looks
    for their ``.pxd`` files, and the ``cimport segd.native._types`` lines, under
    ``segd/native/``. The repository keeps the design card's ``native/`` folder, so a symlink
    under ``build/`` maps one onto the other (the same job ``package_dir`` does for Python).
    """
    root = os.path.join(HERE, "build", "cython-include")
    pkg = os.path.join(root, "segd")
    os.makedirs(pkg, exist_ok=True)
    init = os.path.join(pkg, "__init__.pxd")
    if not os.path.exists(init):
        open(init, "w").close()
    link = os.path.join(pkg, "native")
    if not os.path.islink(link):
        if os.path.exists(link):
            sys.exit(f"{link} exists and is not a symlink to native/")
        os.symlink(os.path.join(HERE, "native"), link)
    return root


def native_extensions() -> list[Extension]:
    """One extension per native/*.pyx, all with the same flags and directives."""
    include_root = cython_include_root()
    compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
    if os.environ.get("SEGD_MARCH"):
        compile_args.append(f"-march={os.environ['SEGD_MARCH']}")
    extensions = []
    for pyx in sorted(glob.glob(os.path.join("native", "*.pyx"))):
        name = "segd.native." + os.path.splitext(os.path.basename(pyx))[0]
        extensions.append(
            Extension(
                name,
                [pyx],
                include_dirs=[np.get_include(), include_root],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=compile_args,
            )
        )
    directives = {
        "language_level": 3,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        "nonecheck": False,
        "cdivision": True,
        "embedsignature": True,
    }
    return cythonize(
        extensions,
        compiler_directives=directives,
        include_path=[include_root],
        quiet=True,
        nthreads=JOBS if JOBS > 1 else 0,
    )


generate_protos()

# Packages, package data and the proto/ mapping live in pyproject.toml [tool.setuptools].
setup(
    ext_modules=native_extensions(),
    zip_safe=False,
    options={"build_ext": {"parallel": JOBS}},
)
