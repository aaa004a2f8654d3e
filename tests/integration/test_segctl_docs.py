"""docs/segctl.md's examples, run as written against a demo server (``serve --demo 2000``).

Every ``console`` block of the document is a session: lines starting with ``$ segctl``
are commands (run in-process, in a scratch directory, against the demo server), the lines
after a command are what it prints (stdout and stderr as a terminal shows them, in order).
Comparison ignores how many spaces separate columns, timings (``0.5 ms``, ``0.01 s``,
the 3-decimal milliseconds of ``--timings``) and
instants (ISO-8601 and ``... UTC`` times); a line ``...`` stands for any lines. The demo
data is generated the way ``segctl serve --demo 2000`` generates it, ending at the
server's start second; evaluating commands get ``--now`` set to that second (the doc's
figures are as of the moment the demo server started), and the README's example is
checked here too.
"""

from __future__ import annotations

import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from segd import Engine
from segd.server.app import build_app
from segd.server.main import _load_demo
from segd.server.segctl.__main__ import main
from segd.server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "segctl.md"
DEMO_CONTACTS = 2000
# segment verbs that evaluate, so take --now (the others would reject it)
EVALUATING = {"count", "members", "sample", "explain", "create", "update", "list",
              "show", "export", "retarget"}  # fmt: skip
_TIMING = re.compile(r"\b\d+(?:\.\d+)? (?:ms|s)\b|\b\d+\.\d{3}\b")
_ISO = re.compile(
    r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z| UTC|[+-]\d\d:\d\d)?)"
)


def examples(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of every ``$ segctl`` line in console blocks."""
    out: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            command = lines[i][2:]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + lines[i]
            i += 1
            expected = []
            while i < len(lines) and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
            out.append((command, expected))
    return out


def normalise(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        line = _ISO.sub("<time>", _TIMING.sub("<t>", line))
        out.append(" ".join(line.split()))
    while out and not out[-1]:
        out.pop()
    return out


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line-wise equality where an expected ``...`` line matches any lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return (
        bool(actual) and expected[0] == actual[0] and matches(expected[1:], actual[1:])
    )


def argv_of(command: str, address: str, now_s: int) -> tuple[list[str], str | None]:
    """segctl's argv for a documented command line, and a `> FILE` redirect if any."""
    words = shlex.split(command, comments=True)
    assert words[0] == "segctl", command
    words = words[1:]
    redirect = None
    if ">" in words:
        k = words.index(">")
        redirect, words = words[k + 1], words[:k]
    argv = [*words, "--address", address]
    verb = words[1] if words[0] in ("segment", "segments") and len(words) > 1 else ""
    if verb in EVALUATING and "--now" not in words:
        argv += ["--now", str(now_s)]
    return argv, redirect


def run(command: str, address: str, now_s: int) -> tuple[int, list[str]]:
    argv, redirect = argv_of(command, address, now_s)
    terminal = io.StringIO()
    if redirect is None:
        code = main(argv, terminal, terminal)
    else:
        with open(redirect, "w", encoding="utf-8") as f:
            code = main(argv, f, terminal)
    return code, terminal.getvalue().splitlines()


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[str, int]]:
    engine = Engine()
    now = _load_demo(engine, DEMO_CONTACTS)
    app = build_app(Settings(address="127.0.0.1:0"), engine, serving=True)
    app.server.start()
    yield f"127.0.0.1:{app.port}", int(now.timestamp())
    app.stop(0).wait(5)


def test_the_doc_has_examples_to_run() -> None:
    found = examples(DOC.read_text())
    assert len(found) >= 20
    assert any("explain" in c and "--customer" in c for c, _ in found)


def test_docs_segctl_examples_run_as_written(demo, tmp_path, monkeypatch) -> None:
    address, now_s = demo
    monkeypatch.chdir(tmp_path)
    failures: list[str] = []
    for command, expected in examples(DOC.read_text()):
        code, printed = run(command, address, now_s)
        want, got = normalise(expected), normalise(printed)
        if not matches(want, got):
            failures.append(
                f"$ {command}\n--- documented\n" + "\n".join(expected)
                + f"\n--- printed (exit {code})\n" + "\n".join(printed)
            )  # fmt: skip
    assert not failures, "\n\n".join(failures)
    assert Path("vip.xlsx").stat().st_size > 0  # the export examples wrote their files


def test_readme_explain_example_shows_its_not(demo) -> None:
    """README: `orders_count >= 3 and not email_open() in last 30 days` keeps its not."""
    readme = (ROOT / "README.md").read_text()
    command = next(
        line.strip() for line in readme.splitlines()
        if line.strip().startswith("segctl segment explain")
    )  # fmt: skip
    address, now_s = demo
    code, printed = run(command, address, now_s)
    assert code == 0, printed
    rows = [line.split() for line in printed]
    labels = [" ".join(r) for r in rows]
    assert rows[1][0] == "and"
    assert any(r[:2] == ["└─", "not"] for r in rows), labels
    not_row = next(k for k, r in enumerate(rows) if r[:2] == ["└─", "not"])
    assert "email_open() in last 30 days" in labels[not_row + 1]
    assert sum(line.startswith("and") for line in printed) == 1  # the root once
