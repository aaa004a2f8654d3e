"""``python -m segd.bench export``: audience export speed and memory (issue 13).

Loads ``--contacts`` demo contacts (profiles only: an export reads no events), then
exports every member with ``--columns`` profile columns as CSV and as Parquet through
``Engine.export``, ``--rounds`` times each (best kept), and the retargeting export of the
``email`` channel once. Memory: the peak of Python allocations (``tracemalloc``, numpy
included) and of Arrow's memory pool during the export, next to the size of the whole
table the export would be if it were built at once.

    python -m segd.bench export --contacts 1m
    python -m segd.bench export --contacts 1m --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence

DEFAULT_COLUMNS = "city,email,birth_date,email_subscribed,rating"


def _scale(text: str) -> int:
    text = text.lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


class _PoolPeak:
    """The highest Arrow pool allocation seen at each batch (sampled by ``progress``)."""

    def __init__(self) -> None:
        import pyarrow as pa

        self._pa = pa
        self.base = pa.total_allocated_bytes()
        self.peak = 0

    def sample(self, _rows: int = 0) -> None:
        self.peak = max(self.peak, self._pa.total_allocated_bytes() - self.base)


def run(contacts: int, columns: list[str], rounds: int, seed: int) -> dict:
    import pyarrow as pa
    from pyroaring import BitMap

    from segd import Engine, datagen
    from segd.results import SegmentResult

    print(f"generating {contacts:,} contacts ...", file=sys.stderr)
    data = datagen.generate(contacts=contacts, seed=seed, events_per_contact=0.01)
    engine = Engine()
    engine.load_contacts(data.contacts)
    del data
    # Every contact is a member: a SegmentResult over all cids (the engine takes one).
    everyone = BitMap()
    everyone.add_range(0, engine.store.n_contacts)
    result = SegmentResult(everyone, engine.customer_ids, time.time())
    members = result.count()
    full_table = engine.export_batches(result, columns, chunk_rows=members)
    table_bytes = sum(b.nbytes for b in full_table)
    out: dict = {
        "contacts": contacts,
        "members": members,
        "columns": columns,
        "full_table_bytes": table_bytes,
        "formats": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("csv", "parquet"):
            path = os.path.join(tmp, f"audience.{fmt}")
            best = float("inf")
            for _ in range(rounds):
                report = engine.export(result, path, columns=columns)
                best = min(best, report.seconds)
            pool = _PoolPeak()
            tracemalloc.start()
            report = engine.export_stream(result, format=fmt, columns=columns)
            size = 0
            for piece in report:
                size += len(piece)
                pool.sample()
            _, py_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out["formats"][fmt] = {
                "seconds": round(best, 3),
                "rows_per_s": round(members / best),
                "bytes": size,
                "python_peak_bytes": py_peak,
                "arrow_peak_bytes": pool.peak,
            }
            print(
                f"{fmt:8} {best:6.3f} s  {members / best / 1e6:5.2f} M rows/s  "
                f"file {size / 1e6:7.1f} MB  peak python {py_peak / 1e6:6.1f} MB, "
                f"arrow {pool.peak / 1e6:6.1f} MB (whole table {table_bytes / 1e6:.1f} MB)",
                file=sys.stderr,
            )
        path = os.path.join(tmp, "hashes.txt")
        report = engine.export_retargeting(result, path, "email")
        out["retargeting_email"] = {
            "seconds": round(report.seconds, 3),
            "hashes": report.rows,
        }
        print(
            f"retarget {report.seconds:6.3f} s  {report.rows:,} hashes (email channel)",
            file=sys.stderr,
        )
    out["arrow_version"] = pa.__version__
    return out


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m segd.bench export"
) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--contacts", default="1m", help="scale: 100k, 1m, ...")
    p.add_argument("--columns", default=DEFAULT_COLUMNS, help="profile columns")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="the record on stdout")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    record = run(_scale(a.contacts), a.columns.split(","), a.rounds, a.seed)
    record["total_seconds"] = round(time.perf_counter() - t0, 1)
    if a.json:
        print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
