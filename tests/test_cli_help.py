"""Every command's ``--help`` at 80 and 120 columns, and shell completion (issue #23).

The commands are found by walking the click tree that ``outboxhub`` runs, so a new command is covered
without touching this file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxhub.cli.app import build_command
from outboxhub.cli.common import STORE_URL_SCHEMES, complete_store_url
from outboxhub.cli.help import MAX_WIDTH, walk

PATHS = [path for path, _ in walk(build_command())]
TYPE_PLACEHOLDER = re.compile(r"<(str|int|float|bool|path|list\[[^\]]*\])>", re.IGNORECASE)


def _help(path: str, columns: int, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    root = build_command()
    ctx = root.make_context("outboxhub", [], resilient_parsing=True)
    command: Any = root
    for name in path.split():
        command = command.commands[name]
        ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
    text: str = command.get_help(ctx)
    return text


def _option_names(text: str) -> list[str]:
    """The first column of every option line (``--flag PLACEHOLDER``)."""
    return [line.strip().split("  ")[0] for line in text.splitlines() if line.lstrip().startswith("-")]


def test_the_walk_finds_every_command() -> None:
    assert {"", "serve", "token", "doctor", "publish", "tail", "drain", "bench", "bench publish"} <= set(
        PATHS
    )


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("path", PATHS)
def test_help_fits_the_terminal_and_cuts_nothing(
    path: str, columns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _help(path, columns, monkeypatch)
    width = min(columns, MAX_WIDTH)
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, f"{path!r} at {columns} columns: lines over {width}: {too_long}"
    for name in _option_names(text):
        assert "…" not in name and "..." not in name, f"{path!r}: cut option name {name!r}"
    assert not TYPE_PLACEHOLDER.search(text), f"{path!r}: a Python type as a placeholder: {text}"
    assert f"Usage: outboxhub {path}".rstrip() in text
    assert "Examples:" in text and "outboxhub" in text.split("Examples:")[1], f"{path!r} has no Examples"
    for line in text.splitlines():
        assert line.count("default:") <= 1, f"{path!r}: a default shown twice: {line!r}"


def test_serve_help_names_values_and_reads_defaults_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = _help("serve", 80, monkeypatch)
    assert "--outbox-ordered-by-key / --no-outbox-ordered-by-key" in text
    assert "--store URL" in text and "--jwt-leeway-s SECONDS" in text and "--ws-port PORT" in text
    flat = " ".join(text.split())
    assert "[default: 8090]" in flat and "[default: sqlite:///outboxhub.db]" in flat
    # the description's two paragraphs are wrapped as paragraphs, not broken where the source line ends
    assert "With no JWT secret or JWKS URL configured" in flat
    assert "table). With no JWT\n" not in text


@pytest.mark.parametrize("path", PATHS)
def test_help_names_every_value_and_shows_each_default_once(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flat = " ".join(_help(path, 100, monkeypatch).split())
    # click's fallback placeholder says nothing about the value (``--ws-server TEXT``, ``[TEXT]...``)
    assert not re.search(r"\bTEXT\b", flat), f"{path!r}: a TEXT placeholder: {flat}"
    # a default in the help sentence as well as in typer's [default: …] is the default shown twice
    for default in re.findall(r"\[default: ([^;\]]+)", flat):
        assert f"({default})." not in flat, f"{path!r}: default {default} shown twice: {flat}"


def test_help_through_the_console_script_at_80_columns() -> None:
    env = {**os.environ, "COLUMNS": "80"}
    result = subprocess.run(
        [sys.executable, "-m", "outboxhub.cli", "drain", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: outboxhub drain")
    assert "outboxhub drain --outbox sqlite:///app.db --url ws://hub:8090/" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


# -- completion -------------------------------------------------------------------------------------------


def _complete(words: str, cword: int) -> list[str]:
    env = {
        **os.environ,
        "_OUTBOXHUB_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(cword),
    }
    result = subprocess.run(
        [sys.executable, "-m", "outboxhub.cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_is_generated_for_each_shell(shell: str) -> None:
    # Without this, typer's --show-completion is a flag that detects the shell from the parent processes
    # (shellingham), so the result would depend on what runs the tests (``make`` recipes run under sh, which
    # typer does not support); typer's own switch makes the option take the shell named here.
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "outboxhub.cli", "--show-completion", shell],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "_OUTBOXHUB_COMPLETE" in result.stdout and "outboxhub" in result.stdout


def test_completion_offers_commands_flags_and_store_url_schemes() -> None:
    assert "doctor" in _complete("outboxhub do", 1)
    assert "--outbox-batch-size" in _complete("outboxhub serve --outbox-b", 2)
    schemes = _complete("outboxhub serve --store ", 3)
    assert {"sqlite:///", "postgresql://", "mongodb://"} <= set(schemes)
    assert _complete("outboxhub drain --outbox post", 3) == ["postgresql://"]
    assert "mongodb://" in _complete("outboxhub doctor --outbox ", 3)


@given(st.sampled_from(STORE_URL_SCHEMES).flatmap(lambda s: st.integers(0, len(s)).map(lambda n: (s, s[:n]))))
def test_url_completion_keeps_every_scheme_the_word_can_still_become(case: tuple[str, str]) -> None:
    scheme, prefix = case
    offered = complete_store_url(prefix)
    assert scheme in offered
    assert all(s.startswith(prefix) for s in offered)


@given(st.text(max_size=12))
def test_url_completion_never_offers_a_scheme_the_word_cannot_become(word: str) -> None:
    assert complete_store_url(word) == [s for s in STORE_URL_SCHEMES if s.startswith(word)]
