"""Breakdown of index bytes per event log after Engine.warm()."""

import sys
import time

import numpy as np
from _common import load_engine

d = sys.argv[1]
eng, _ = load_engine(d)
st = eng.stats()
n_ev = st["events"]
print(
    "events",
    n_ev,
    "contacts",
    st["contacts"],
    "index B/event (no warm)",
    st.get("index_bytes_per_event"),
)
t0 = time.perf_counter()
eng.warm()
print("warm s", time.perf_counter() - t0)
st = eng.stats()
print({k: v for k, v in st.items() if "per_event" in k})
tot = 0
for t, log in eng.store.logs.items():
    offs = rows = codes = 0
    if log._ci is not None:
        offs, rows = log._ci[0].nbytes, log._ci[1].nbytes
        codes = sum(c.nbytes for c in log._ci_codes.values())
    attr = sum(a.nbytes() for a in log._attr.values())
    post = {k: p.nbytes() for k, p in log.postings.items()}
    s = offs + rows + codes + attr + sum(post.values())
    tot += s
    print(
        f"{t:14s} n={log.n:>10,} offs={offs / 1e6:7.1f} rows={rows / 1e6:7.1f} codes={codes / 1e6:6.1f} attr={attr / 1e6:6.1f} post={ {k: round(v / 1e6, 1) for k, v in post.items()} } sum={s / 1e6:.1f} MB"
    )
print("total index MB", tot / 1e6, "B/event", tot / n_ev)
print("catalog items", len(eng.store.catalog))

for t, log in eng.store.logs.items():
    for k in log.postings:
        col = log.dim(k)[: log.n]
        u, c = np.unique(col, return_counts=True)
        print(t, k, "distinct", len(u), "top share", round(c.max() / log.n, 3))
