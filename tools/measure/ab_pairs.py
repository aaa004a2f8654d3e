"""event_pairs at 1M (view log, item filter with its contact-major copy): min/median of 40."""

import json
import statistics
import sys
import time

import numpy as np
from _common import load_engine

from segd.native import pairscan
from segd.segments import pairs as P

d = sys.argv[1]
eng, ds = load_engine(d)
now = int(ds.now.timestamp())
n = eng.store.n_contacts
log = eng.store.logs["view"]
view = P._pair_log(log, n)
rng = np.random.default_rng(1)
mask = (rng.random(60000) < 0.05).astype(np.uint8)
src = pairscan.PairSource(
    view, code_filters=[(log.dim("item"), mask, log.contact_codes("item"))]
)
plain = pairscan.PairSource(view)
out = {}
for k in (2000, 20000, 200000):
    cids = np.sort(rng.choice(n, k, replace=False)).astype(np.uint32)
    lo = np.full(k, now - 30 * 86400, np.int64)
    hi = np.full(k, now, np.int64)
    for name, s in (("filt", src), ("plain", plain)):
        ts = []
        for _ in range(40):
            t = time.perf_counter()
            pairscan.event_pairs(s, cids, lo, hi, 2)
            ts.append((time.perf_counter() - t) * 1e3)
        out[f"{name}{k}"] = (round(min(ts), 3), round(statistics.median(ts), 3))
print(json.dumps(out))
