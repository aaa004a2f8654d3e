import sys

import numpy as np
from _common import load_engine

d = sys.argv[1]
eng, _ = load_engine(d)
nc = eng.store.n_contacts
for t, log in eng.store.logs.items():
    c = np.bincount(log.cid[: log.n], minlength=nc)
    heavy = c >= 255
    blocks = np.zeros((nc + 31) // 32, bool)
    np.logical_or.at(blocks, np.flatnonzero(heavy) // 32, True)
    b64 = np.add.reduceat(c, np.arange(0, nc, 64))
    print(
        f"{t:16s} max {c.max():6d} p99.9 {np.percentile(c, 99.9):6.0f} heavy {heavy.sum():7d} wide-blocks {blocks.mean():.4f} max rows/64 {b64.max()}"
    )
