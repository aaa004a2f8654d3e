"""A switch off / on in one process: load a bench cache, warm, prepare the suite, then
for QUERIES the median thread CPU of REPS calls with MODULE.NAME = False and = True,
alternated over 3 passes; members must agree. One JSON line (ms)."""

import importlib
import json
import statistics
import sys
import time

from _common import open_dataset

from segd.bench.queries import suite
from segd.bench.side_by_side.engine_segd import Adapter

d, switch, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
reps = int(sys.argv[4]) if len(sys.argv) > 4 else 15
module_name, attr = switch.rsplit(".", 1)
module = importlib.import_module(module_name)
ds = open_dataset(d)
a = Adapter()
a.load(ds.paths)
a.eng.warm()
a.prepare(list(suite(ds.now)), ds.now)
out: dict = {"switch": switch}
for _pass in range(3):
    for value in (False, True):
        setattr(module, attr, value)
        for name in names:
            counts = {a.count(name) for _ in range(2)}
            ts = []
            for _ in range(reps):
                t = time.thread_time()
                counts.add(a.count(name))
                ts.append((time.thread_time() - t) * 1000)
            assert len(counts) == 1, (name, value, counts)
            key = f"{name} {'on' if value else 'off'}"
            out.setdefault(key, []).append(round(statistics.median(ts), 2))
            out[f"{name} count"] = counts.pop()
print(json.dumps(out))
