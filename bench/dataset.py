"""The benchmark dataset: the demo data of ``segd.datagen`` cached as Parquet.

Both engines load the *same* files, ``<cache>/<scale>-seed<seed>/{contacts,items,
events}.parquet``, plus ``meta.json`` with the row counts and the dataset's ``now``, so a
second run at the same scale skips generation (10M contacts takes minutes). ``<cache>`` is
the user's cache directory (``platformdirs.user_cache_dir("segd")/bench``, e.g.
``~/.cache/segd/bench``), or ``$SEGD_BENCH_CACHE``, or ``--cache-dir``: never inside the
installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

CACHE_ENV = "SEGD_BENCH_CACHE"


def default_cache_dir() -> Path:
    """``$SEGD_BENCH_CACHE``, else the user cache directory's ``bench`` folder."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("segd")) / "bench"


TABLES = ("items", "contacts", "events")
META_VERSION = 1  # bump when the cached layout changes, so stale caches regenerate

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Dataset:
    """Paths of the cached Parquet files and what they hold."""

    directory: Path
    contacts: int  # rows of contacts.parquet (event-only ids come on top)
    events: int
    items: int
    now: datetime
    seed: int

    def path(self, table: str) -> Path:
        return self.directory / f"{table}.parquet"

    @property
    def paths(self) -> dict[str, str]:
        return {t: str(self.path(t)) for t in TABLES}

    def load_into(self, engine: Any) -> None:
        """Load the three tables into `engine` in the order the engine needs them
        (items before the events that name them, contacts before their events)."""
        engine.load_items(str(self.path("items")))
        engine.load_contacts(str(self.path("contacts")))
        engine.load_events(str(self.path("events")))


def scale_label(contacts: int) -> str:
    """``100000 -> "100k"``, ``1000000 -> "1m"``, ``2000 -> "2k"``, ``2500 -> "2500"``."""
    for unit, size in (("m", 1_000_000), ("k", 1_000)):
        if contacts % size == 0:
            return f"{contacts // size}{unit}"
    return str(contacts)


def cache_dir(contacts: int, seed: int, root: Path | None = None) -> Path:
    return (root or default_cache_dir()) / f"{scale_label(contacts)}-seed{seed}"


def _read_meta(directory: Path) -> dict | None:
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("version") != META_VERSION:
        return None
    if not all((directory / f"{t}.parquet").exists() for t in TABLES):
        return None
    return meta


def _dataset(directory: Path, meta: dict) -> Dataset:
    return Dataset(
        directory=directory,
        contacts=meta["contacts"],
        events=meta["events"],
        items=meta["items"],
        now=datetime.fromisoformat(meta["now"]),
        seed=meta["seed"],
    )


def dataset_at(directory: Path) -> Dataset | None:
    """The cached dataset in `directory` (a ``cache_dir``), or None when it holds none
    (or one of another format version)."""
    meta = _read_meta(directory)
    return None if meta is None else _dataset(directory, meta)


def cached_dataset(
    contacts: int, seed: int = 0, root: Path | None = None
) -> Dataset | None:
    """The cached dataset of this scale and seed, or None when there is none."""
    return dataset_at(cache_dir(contacts, seed, root))


def ensure_dataset(
    contacts: int,
    seed: int = 0,
    *,
    root: Path | None = None,
    progress: Progress | None = None,
    regenerate: bool = False,
) -> tuple[Dataset, bool]:
    """The cached dataset, generating it first when absent; (dataset, was_cached).

    Files are written to a temporary sibling directory and renamed into place, so an
    interrupted run never leaves a half-written cache that a later run would trust.
    """
    directory = cache_dir(contacts, seed, root)
    meta = None if regenerate else _read_meta(directory)
    if meta is not None:
        return _dataset(directory, meta), True

    import pyarrow.parquet as pq

    from segd.datagen import DEFAULT_NOW, write_parquet_streaming

    tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    # The streaming writer produces the same files as generate().write_parquet() without
    # holding the Arrow events table: 10M contacts peak at ~7 GB instead of ~15 GB.
    paths = write_parquet_streaming(contacts, tmp, seed=seed, progress=progress)
    gen_s = time.perf_counter() - t0
    rows = {
        name: pq.ParquetFile(path).metadata.num_rows for name, path in paths.items()
    }
    meta = {
        "version": META_VERSION,
        "contacts": rows["contacts"],
        "events": rows["events"],
        "items": rows["items"],
        "now": DEFAULT_NOW.isoformat(),
        "seed": seed,
        "generate_s": round(gen_s, 3),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return _dataset(directory, meta), False
