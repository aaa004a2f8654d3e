"""Where one query's time goes, in process: load a bench cache, warm, prepare the suite,
then time QUERY REPS times with thread-CPU timers around every plan node's run, every
per-candidate (pairs) node and the first leaf's gather; per step the median over the
calls. One JSON line (ms). The timers add ~1 us per step."""

import json
import statistics
import sys
import time
from collections import defaultdict

from _common import open_dataset

from segd import events
from segd.bench.queries import suite
from segd.bench.side_by_side.engine_segd import Adapter
from segd.segments import event_node, pairs, plan

d, name = sys.argv[1], sys.argv[2]
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 15
ds = open_dataset(d)
a = Adapter()
a.load(ds.paths)
a.eng.warm()
a.prepare(list(suite(ds.now)), ds.now)
for _ in range(3):
    a.count(name)

acc: dict = defaultdict(float)
labels: dict = {}


def label(node) -> str:
    got = labels.get(id(node))
    if got is None:
        got = labels[id(node)] = node.label.replace("\n", " ")[:60]
    return got


def timed(cls, meth, key):
    orig = getattr(cls, meth)

    def wrapper(self, *args, **kw):
        t = time.thread_time()
        out = orig(self, *args, **kw)
        acc[key(self, args)] += (time.thread_time() - t) * 1000
        return out

    setattr(cls, meth, wrapper)


timed(plan.Node, "run", lambda s, a: f"run {s.kind}: {label(s)}")
timed(pairs._Pairs, "run", lambda s, a: f"  pairs: {label(a[0])} [{len(a[1])}]")
timed(event_node.EventNode, "_by_value_contacts", lambda s, a: "  first leaf gather")
timed(plan.AndNode, "_by_indexes", lambda s, a: "  and: by indexes")


def timed_fn(module, fname, key):
    orig = getattr(module, fname)

    def wrapper(*args, **kw):
        t = time.thread_time()
        out = orig(*args, **kw)
        acc[key] += (time.thread_time() - t) * 1000
        return out

    setattr(module, fname, wrapper)


# the first leaf's parts
timed(events.EventLog, "attribute_cids", lambda s, a: "    attribute_cids")
timed_fn(event_node, "distinct_to_bitmap", "    distinct_to_bitmap")
timed(event_node.EventFilters, "_by_values", lambda s, a: "    _by_values")
timed(
    event_node.EventFilters, "_postings_estimate", lambda s, a: "    _postings_estimate"
)
timed_fn(pairs, "decide_cids", "  decide_cids")
timed_fn(pairs, "cids_to_bitmap", "  decide: cids_to_bitmap")


calls = []
for _ in range(reps):
    acc.clear()
    t = time.thread_time()
    count = a.count(name)
    total = (time.thread_time() - t) * 1000
    row = dict(acc)
    row["TOTAL"] = total
    calls.append(row)
keys = sorted({k for c in calls for k in c})
out = {"query": name, "count": count}
for k in keys:
    out[k] = round(statistics.median(c.get(k, 0.0) for c in calls), 3)
print(json.dumps(out, indent=1))
if "--thp" in sys.argv:
    from _thp import hot_arrays, thp_share

    for k, v in hot_arrays(a.eng).items():
        share = thp_share(v)
        print(
            f"{k:40s} {v.nbytes / 1e6:9.1f} MB  THP {share if share is None else round(share, 3)}"
        )
