"""How much of a numpy array's memory sits on transparent huge pages (Linux, root):
its pages' frames from /proc/self/pagemap, their flags from /proc/kpageflags."""

from __future__ import annotations

import os
import struct

import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE")
KPF_THP = 1 << 22


def thp_share(arr: np.ndarray) -> float | None:
    """Share of `arr`'s resident 4 KiB pages that belong to a THP; None when unknown."""
    base = arr.__array_interface__["data"][0]
    nbytes = arr.nbytes
    if nbytes == 0:
        return None
    first, last = base // PAGE, (base + nbytes - 1) // PAGE
    try:
        with (
            open("/proc/self/pagemap", "rb") as pm,
            open("/proc/kpageflags", "rb") as kf,
        ):
            pm.seek(first * 8)
            raw = pm.read((last - first + 1) * 8)
            entries = struct.unpack(f"{len(raw) // 8}Q", raw)
            resident = thp = 0
            for i, e in enumerate(entries):
                if (
                    i % 64 and resident > 4096
                ):  # sample: every 64th page past the first 4k
                    continue
                if not e >> 63 & 1:
                    continue
                pfn = e & ((1 << 55) - 1)
                if pfn == 0:
                    return None
                kf.seek(pfn * 8)
                flags = struct.unpack("Q", kf.read(8))[0]
                resident += 1
                thp += bool(flags & KPF_THP)
    except OSError:
        return None
    return thp / resident if resident else None


def hot_arrays(eng) -> dict[str, np.ndarray]:
    """The arrays the reference segment gathers from at random."""
    st = eng.store
    out: dict[str, np.ndarray] = {}
    for name, col in st.contacts.columns.items():
        for attr in ("values", "codes", "valid"):
            a = getattr(col, attr, None)
            if isinstance(a, np.ndarray) and a.nbytes > 1 << 20:
                out[f"contacts.{name}.{attr}"] = a
    agg = st.aggregates
    for attr in ("orders_count", "revenue", "last_order_s", "last_email_open_s"):
        out[f"agg.{attr}"] = getattr(agg, attr)
    for etype in ("view", "order", "add_to_cart", "search", "email_open"):
        log = st.logs.get(etype)
        if log is None:
            continue
        out[f"{etype}.ts"] = log.ts
        out[f"{etype}.cid"] = log.cid
        if log._ci is not None:
            out[f"{etype}.ci.rows"] = log._ci[1]
        for d, v in (log._ci_codes or {}).items():
            out[f"{etype}.ci.{d}"] = v
    return out
