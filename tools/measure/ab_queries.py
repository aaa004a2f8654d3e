"""In-process query CPU times at 1M (segd only): load, warm, prepare, then per query
the median thread CPU of N calls. Prints one JSON line (for A/B across builds)."""

import json
import statistics
import sys
import time

from _common import open_dataset

from segd.bench.queries import suite
from segd.bench.side_by_side.engine_segd import Adapter

d = sys.argv[1]
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 15
ds = open_dataset(d)
now = ds.now
a = Adapter()
a.load(ds.paths)
t0 = time.perf_counter()
a.eng.warm()
warm_s = time.perf_counter() - t0
qs = suite(now)
a.prepare(qs, now)
out = {
    "warm_s": round(warm_s, 2),
    "index_B_per_event": round(a.eng.stats()["index_bytes_per_event"], 3),
}
for q in qs:
    a.count(q.name)
    a.count(q.name)
    ts = []
    for _ in range(reps):
        t = time.thread_time()
        a.count(q.name)
        ts.append((time.thread_time() - t) * 1000)
    out[q.name] = round(statistics.median(ts), 3)
print(json.dumps(out))
