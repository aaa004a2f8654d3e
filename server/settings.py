"""The server's one settings object. Precedence: flag > ``SEGD_*`` environment > default."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_DATA_DIR = "./segd-data"  # like etcd's default.etcd: next to where it runs


@dataclass(frozen=True)
class Settings:
    """Effective server configuration; unknown keys are a TypeError (no silent typos)."""

    # HOST:PORT to listen on (env SEGD_ADDRESS). Port 0 picks a free port; the ready log
    # line shows it. Loopback by default: exposing segd is an explicit decision.
    address: str = DEFAULT_ADDRESS
    # Bearer token every call must carry (env SEGD_TOKEN). None: no authentication.
    token: str | None = field(default=None, repr=False)
    # PEM certificate chain and private key; both or neither. None: plaintext.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Directory for persistent state (write-ahead log, snapshots), created if missing
    # (env SEGD_DATA_DIR). None: DEFAULT_DATA_DIR, unless `in_memory` or a `demo` run.
    data_dir: str | None = None
    # Keep everything in memory only (no data directory): today's behaviour, for tests.
    in_memory: bool = False
    # When a write is acknowledged: "always" (its log record is fsynced; concurrent
    # writers share fsyncs), "interval" (fsync every fsync_interval_ms: a crash may lose
    # that window of acknowledged writes) or "off" (benchmarks only).
    fsync: str = "always"
    fsync_interval_ms: int = 100
    # Snapshot schedule: "10m" / "1h" / "30s" (time) or a record count ("5000000");
    # None: only on demand (segctl snapshot) and on graceful shutdown.
    snapshot_every: str | None = None
    # RPC worker threads. Each open stream (StreamEvents, Export) holds one for its life;
    # more threads cost ~8 MiB of address space each, little real memory.
    workers: int = 16
    # Threads of the read lane: quick unary reads (Count, Members, Sample, Get, health
    # Check) run on this separate small pool instead of the shared one. Few threads
    # hand the GIL around less: on 2 cores, 16 clients' cached Counts cost ~0.5 ms of
    # server CPU each on 2 threads against ~0.7-1.1 ms on 16 (BENCHMARKS.md, issue
    # 15). Callers beyond it queue (they cost no CPU while queued); streams and writes
    # keep the shared pool, so a long Count or Export never blocks them. 0: no lane.
    read_workers: int = 2
    # Largest request / response message in MiB; bigger requests get RESOURCE_EXHAUSTED.
    # A 64 MiB Arrow batch is ~1-2M events; the server may buffer `workers` of them.
    max_message_mb: int = 64
    # Segment results kept between writes, so repeated counts of the same segment cost
    # one evaluation per write (default 64; 0 turns the cache off, e.g. to measure).
    result_cache: int = 64
    # Generate and load a demo dataset of this many contacts before serving (0: none).
    demo: int = 0
    # Port of the Prometheus /metrics endpoint on the listen host; None: off, 0: any free.
    metrics_port: int | None = None
    # Seconds in-flight calls get to finish on SIGTERM / SIGINT.
    grace_seconds: float = 10.0
    # Log level of the segd loggers: debug, info, warning, error.
    log_level: str = "info"
    # Rebuild the recommendation model this often, in seconds (the first build starts at
    # startup, in the background); 0: only on demand (segctl recs rebuild).
    recs_rebuild_s: float = 600.0

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def storage_dir(self) -> str | None:
        """The data directory actually used; None when running in memory.

        ``--demo`` runs in memory unless a data directory was given explicitly."""
        if self.in_memory:
            return None
        if self.data_dir:
            return self.data_dir
        return None if self.demo else DEFAULT_DATA_DIR

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """The effective values, the token masked (for --print-config and the start log)."""
        out = dataclasses.asdict(self)
        out["token"] = "***" if self.token else None
        return out


def env_defaults(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``SEGD_*`` variables that apply to the server, as Settings keys."""
    environ = dict(os.environ if environ is None else environ)
    out: dict[str, Any] = {}
    for key in ("address", "token", "tls_cert", "tls_key", "data_dir"):
        value = environ.get(f"SEGD_{key.upper()}")
        if value:
            out[key] = value
    return out
