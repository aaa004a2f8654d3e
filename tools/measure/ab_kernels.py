"""Candidate kernels at 1M (view log): min / median of 40 calls, 20k random candidates."""

import json
import statistics
import sys
import time

import numpy as np
from _common import load_engine

from segd.native import contactindex

d = sys.argv[1]
eng, ds = load_engine(d)
now = int(ds.now.timestamp())
n = eng.store.n_contacts
log = eng.store.logs["view"]
ci = log.contact_index(n)
if len(ci) == 4:
    offsets, rows, limit, ends = ci
    idx = (offsets,)
    extra = (ends,)
else:
    slots, rows, limit = ci
    idx = (slots,)
    extra = ()
r0, r1 = log.window(now - 30 * 86400, now)
rng = np.random.default_rng(1)
out = {}
for k in (2000, 20000, 200000):
    cands = np.sort(rng.choice(n, k, replace=False)).astype(np.uint32)
    mask = (rng.random(60000) < 0.05).astype(np.uint8)
    item = log.dim("item")
    copy = log.contact_codes("item")
    fns = {
        "count": lambda cands=cands: contactindex.count_of_contacts(
            cands, *idx, rows, limit, log.cid, r0, r1, *extra
        ),
        "filtered": lambda cands=cands, item=item, mask=mask, copy=copy: (
            contactindex.count_filtered_of_contacts(
                cands, *idx, rows, limit, log.cid, r0, r1, [(item, mask, copy)], *extra
            )
        ),
        "rows": lambda cands=cands: contactindex.rows_of_contacts(
            cands, *idx, rows, limit, r0, r1, *extra
        ),
    }
    for name, f in fns.items():
        ts = []
        for _ in range(40):
            t = time.perf_counter()
            f()
            ts.append((time.perf_counter() - t) * 1e3)
        out[f"{name}{k}"] = (round(min(ts), 3), round(statistics.median(ts), 3))
print(json.dumps(out))
