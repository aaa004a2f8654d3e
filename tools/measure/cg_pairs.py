import numpy as np

from segd.native import contactindex, pairscan

rng = np.random.default_rng(3)
N, R = 100_000, 1_200_000
cid = rng.integers(0, N, R).astype(np.uint32)
ts = np.sort(rng.integers(1_000_000, 2_000_000, R)).astype(np.uint32)
built = contactindex.build(cid, N)
tc, tr = pairscan.tail_index(cid, R, R)
if hasattr(contactindex, "Slots"):
    log = pairscan.PairLog(cid, ts, built[0], built[1], R, tc, tr)
else:
    log = pairscan.PairLog(cid, ts, built[0], built[1], R, None, tc, tr)
src = pairscan.PairSource(log)
cids = np.sort(rng.choice(N, 20_000, replace=False)).astype(np.uint32)
lo = np.full(20_000, 1_500_000, np.int64)
hi = np.full(20_000, 2_000_000, np.int64)
for _ in range(5):
    pairscan.event_pairs(src, cids, lo, hi, 2)
