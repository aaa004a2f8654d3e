"""Every compiled module of segd.native has a .pyi stub that matches it, name for name.

mypy and editors see the native API only through the stubs, so a stub that drifts from
the .pyx (a renamed keyword, a new function) silently types callers against an API that
does not exist. This test compares the compiled module (introspected) with its stub
(parsed with ast): public functions, classes, their public methods and properties, and
the parameter names of every function and method.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from pathlib import Path

import pytest

import segd.native

NATIVE_DIR = Path(segd.native.__file__).resolve().parent
MODULES = sorted(p.stem for p in NATIVE_DIR.glob("*.pyx"))


def _public(name: str) -> bool:
    return not name.startswith("_") or name in ("__init__", "__len__")


def _params(args: ast.arguments) -> list[str]:
    names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
    return [n for n in names if n not in ("self", "cls")]


def _stub_api(path: Path) -> dict[str, list[str] | dict[str, list[str] | None]]:
    """{function: params} and {class: {member: params or None (a property)}}."""
    api: dict[str, list[str] | dict[str, list[str] | None]] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and _public(node.name):
            api[node.name] = _params(node.args)
        elif isinstance(node, ast.ClassDef) and _public(node.name):
            members: dict[str, list[str] | None] = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and _public(item.name):
                    is_prop = any(
                        isinstance(d, ast.Name) and d.id == "property"
                        for d in item.decorator_list
                    )
                    members[item.name] = None if is_prop else _params(item.args)
            api[node.name] = members
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if _public(node.target.id):
                api[node.target.id] = []  # a constant: `NO_CODE: int`
        # Plain assignments are type aliases for the stub's annotations (Words = ...).
    return api


def _signature_params(fn) -> list[str] | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None  # (*args, **kwargs): a slot wrapper, nothing to compare
    return [p.name for p in params if p.kind != p.VAR_KEYWORD]


def _embedded_init_params(cls: type) -> list[str] | None:
    """Parameter names of a cdef class's constructor, from the signature Cython embeds
    (``embedsignature``) as the first line of the class docstring: the ``__init__`` slot
    wrapper itself only shows ``(*args, **kwargs)``."""
    first = (cls.__doc__ or "").split("\n", 1)[0]
    if not first.startswith(cls.__name__ + "("):
        return None
    inner = first[len(cls.__name__) + 1 : first.rindex(")")]
    # memoryview types (cid_t[::1], uint32_t[:, ::1]) go before splitting on commas
    inner = re.sub(r"\[[^\]]*\]", "", inner)
    names = []
    for part in inner.split(","):
        part = part.split("=", 1)[0].split(":", 1)[0].strip()
        if part and part not in ("*", "/", "self"):
            names.append(part.split()[-1])
    return names


def _runtime_api(module) -> dict[str, list[str] | None | dict[str, list[str] | None]]:
    api: dict[str, list[str] | None | dict[str, list[str] | None]] = {}
    for name in dir(module):
        obj = getattr(module, name)
        if not _public(name) or isinstance(obj, types.ModuleType):
            continue
        if getattr(obj, "__module__", module.__name__) != module.__name__:
            continue  # imported names (pyroaring.BitMap in bitset)
        if isinstance(obj, type):
            members: dict[str, list[str] | None] = {}
            for mname, raw in vars(obj).items():
                if not _public(mname):
                    continue
                if isinstance(raw, (property, types.GetSetDescriptorType)) or (
                    type(raw).__name__ == "getset_descriptor"
                ):
                    members[mname] = None
                elif isinstance(raw, types.MemberDescriptorType):
                    members[mname] = None  # cdef readonly attribute
                elif mname == "__init__":
                    members[mname] = _embedded_init_params(obj)
                else:
                    members[mname] = _signature_params(getattr(obj, mname))
            api[name] = members
        elif callable(obj):
            api[name] = _signature_params(obj)
        elif isinstance(obj, (int, float, str)):
            api[name] = []  # a module constant
    return api


def test_every_pyx_has_a_stub() -> None:
    missing = [m for m in MODULES if not (NATIVE_DIR / f"{m}.pyi").exists()]
    assert not missing, f"native modules without a .pyi stub: {missing}"
    assert {"aggregates", "columns", "contactindex", "eventscan", "postings"} <= set(
        MODULES
    )


@pytest.mark.parametrize("name", MODULES)
def test_stub_matches_compiled_module(name: str) -> None:
    module = importlib.import_module(f"segd.native.{name}")
    stub = _stub_api(NATIVE_DIR / f"{name}.pyi")
    runtime = _runtime_api(module)
    assert sorted(stub) == sorted(runtime), f"{name}: public names differ"
    for key, want in runtime.items():
        got = stub[key]
        if isinstance(want, dict):
            assert isinstance(got, dict), f"{name}.{key} is a class"
            # __init__ / __len__ that a cdef class inherits show up only at runtime
            # when defined; the stub may document the constructor either way.
            got_members = {k: v for k, v in got.items() if k in want or _public(k)}
            extra = set(got_members) - set(want) - {"__init__", "__len__"}
            missing = set(want) - set(got_members)
            assert not extra, f"{name}.{key}: stub-only members {sorted(extra)}"
            assert not missing, (
                f"{name}.{key}: members without a stub {sorted(missing)}"
            )
            for member, params in want.items():
                if params is None or got_members[member] is None:
                    assert (params is None) == (got_members[member] is None) or (
                        params is None and member in ("__init__", "__len__")
                    ), f"{name}.{key}.{member}: property vs method"
                    continue
                assert got_members[member] == params, f"{name}.{key}.{member}"
        elif want is not None:
            assert got == want, f"{name}.{key}: parameters differ"
