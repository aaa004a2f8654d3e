"""What transparent huge pages do to a gather at 10M contacts: pairscan.interval_pairs
(the `age` / `revenue` check per candidate) over 19,776 sorted random candidates of a
10M float64 column, the column on 4 KiB pages (MADV_NOHUGEPAGE) or on THP
(MADV_HUGEPAGE), alternated 3 times; median thread CPU of 30 calls each (ms)."""

import ctypes
import json
import mmap
import time

import numpy as np

from segd.native import pairscan

MADV_HUGEPAGE, MADV_NOHUGEPAGE = 14, 15
HUGE = 2 << 20
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def column(nbytes: int, huge: bool) -> tuple[mmap.mmap, np.ndarray]:
    """A touched uint8 array of `nbytes` on a 2 MiB boundary, advised as asked."""
    m = mmap.mmap(-1, nbytes + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = ctypes.addressof((ctypes.c_char * len(m)).from_buffer(m))
    start = (addr + HUGE - 1) & ~(HUGE - 1)
    advice = MADV_HUGEPAGE if huge else MADV_NOHUGEPAGE
    libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(nbytes), advice)
    raw = np.frombuffer(m, dtype=np.uint8, count=nbytes, offset=start - addr)
    raw[:] = 1
    return m, raw


n = 10_000_000
cids = np.sort(np.random.default_rng(1).choice(n, 19_776, replace=False))
cids = cids.astype(np.uint32)
lo, hi = np.array([0.0]), np.array([1e300])
out: dict = {}
for _ in range(3):
    for huge in (False, True):
        keep, raw = column(n * 8, huge)
        values = raw.view(np.float64)
        ts = []
        for _ in range(30):
            t = time.thread_time()
            pairscan.interval_pairs(values, lo, hi, cids)
            ts.append((time.thread_time() - t) * 1000)
        out.setdefault("THP" if huge else "4KiB", []).append(
            round(float(np.median(ts)), 3)
        )
        del values, raw
print(json.dumps(out))
