"""segd.hugepages: when the server asks glibc for huge pages, and how it says so."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from segd import hugepages

ON = f"{hugepages.TUNABLE}=1"


def test_thp_mode_reads_the_bracketed_word(tmp_path: Path) -> None:
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert hugepages.thp_mode(f) == "madvise"
    f.write_text("[always] madvise never\n")
    assert hugepages.thp_mode(f) == "always"
    f.write_text("always madvise never\n")  # no mode marked
    assert hugepages.thp_mode(f) is None
    assert hugepages.thp_mode(tmp_path / "missing") is None


def _usable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hugepages, "glibc_version", lambda: (2, 36))
    monkeypatch.setattr(hugepages, "thp_mode", lambda: "madvise")


def test_with_hugepages_adds_the_tunable_once(monkeypatch: pytest.MonkeyPatch) -> None:
    _usable(monkeypatch)
    env = hugepages.with_hugepages({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": ON}
    assert hugepages.enabled(env)
    assert hugepages.with_hugepages(env) == env  # already there: unchanged
    kept = hugepages.with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{ON}"
    # the user's own choice of the tunable wins, whatever its value
    mine = {"GLIBC_TUNABLES": f"{hugepages.TUNABLE}=0"}
    assert hugepages.with_hugepages(mine) == mine
    assert not hugepages.enabled(mine)


def test_not_applicable_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    _usable(monkeypatch)
    assert hugepages.applicable({})
    assert not hugepages.applicable({hugepages.OPT_OUT: "0"})
    assert hugepages.with_hugepages({hugepages.OPT_OUT: "0"}) == {
        hugepages.OPT_OUT: "0"
    }
    monkeypatch.setattr(hugepages, "glibc_version", lambda: (2, 34))
    assert not hugepages.applicable({})
    monkeypatch.setattr(hugepages, "glibc_version", lambda: None)  # musl, macOS
    assert not hugepages.applicable({})
    _usable(monkeypatch)
    monkeypatch.setattr(hugepages, "thp_mode", lambda: "never")
    assert not hugepages.applicable({})
    monkeypatch.setattr(hugepages, "thp_mode", lambda: None)
    assert not hugepages.applicable({})


def test_glibc_version_is_parsed_or_none() -> None:
    got = hugepages.glibc_version()
    assert got is None or (isinstance(got, tuple) and got >= (2, 0))


def _run(script: str, **env: str) -> list[str]:
    """Run `script` in a fresh interpreter; its printed lines."""
    full = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    full.update(env)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.split()


REEXEC = """
    import os, sys
    from segd import hugepages
    print(os.getpid(), hugepages.enabled())
    sys.stdout.flush()
    hugepages.reexec_with_hugepages()
    print(os.getpid(), hugepages.enabled())
"""


@pytest.mark.skipif(not hugepages.applicable(), reason="no glibc 2.35+ with THP here")
def test_reexec_keeps_the_pid_and_turns_it_on() -> None:
    """The program starts again in the same process, now with the tunable (its first
    line is printed twice: once before the exec, once by the new image, which has it
    on), and the new image does not exec again."""
    first_pid, before, pid1, again, pid2, after = _run(REEXEC)
    assert (before, again, after) == ("False", "True", "True")
    assert first_pid == pid1 == pid2


def test_reexec_opted_out_runs_on() -> None:
    pid, before, pid_after, after = _run(REEXEC, **{hugepages.OPT_OUT: "0"})
    assert (before, after) == ("False", "False")
    assert pid == pid_after
