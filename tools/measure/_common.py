"""What the measurement scripts share: a bench cache directory opened and loaded."""

from __future__ import annotations

import sys
from pathlib import Path

from segd import Engine, hugepages
from segd.bench.dataset import Dataset, dataset_at

# as the server and the side by side's segd worker run (SEGD_HUGEPAGES=0: as started)
hugepages.reexec_with_hugepages()


def open_dataset(directory: str) -> Dataset:
    """The cached dataset in `directory`; exits with a message when there is none."""
    ds = dataset_at(Path(directory).expanduser())
    if ds is None:
        sys.exit(f"{directory}: no bench dataset (python -m segd.bench --contacts 1m)")
    return ds


def load_engine(directory: str) -> tuple[Engine, Dataset]:
    """A fresh engine with the dataset's items, contacts and events loaded."""
    ds = open_dataset(directory)
    eng = Engine()
    eng.load_items(ds.paths["items"])
    eng.load_contacts(ds.paths["contacts"])
    eng.load_events(ds.paths["events"])
    return eng, ds
