"""The server's one settings object. Precedence: flag > ``SEGD_*`` environment > default."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ADDRESS = "127.0.0.1:50051"


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
    # Directory for persistent state; created if missing. Persistence is a later issue:
    # nothing is written there yet, the data lives in memory only.
    data_dir: str | None = None
    # RPC worker threads. Each open stream (StreamEvents, Export) holds one for its life;
    # more threads cost ~8 MiB of address space each, little real memory.
    workers: int = 16
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

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]") or "127.0.0.1"

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
