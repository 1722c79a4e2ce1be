"""``outboxhub serve`` settings errors and ``outboxhub token``, run as the real console script."""

from __future__ import annotations

import os
import subprocess
import sys

import jwt
import pytest

SECRET = "x" * 48


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_") and not k.startswith("JWT_")
    }
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "outboxhub.cli", *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("serve", "--max-frame-bytes", "10"), {}, "max_frame_bytes"),
        (("serve",), {"OUTBOXHUB_PUBLISH_RATE": "fast"}, "publish_rate"),
        (("serve",), {"WS_PORT": "99999"}, "ws_port"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(args: tuple[str, ...], env: dict[str, str], named: str) -> None:
    result = _run(*args, **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "flag", "value"),
    [
        (("serve", "--ws-port", "abc"), "--ws-port", "abc"),  # does not parse: typer's usage error
        (("serve", "--ws-port", "70000"), "--ws-port", "70000"),  # parses, out of range: the settings
        (("serve", "--poll-interval-s", "0"), "--poll-interval-s", "0"),
        (("serve", "--auth-timeout-s", "soon"), "--auth-timeout-s", "soon"),
        (("serve", "--auth-timeout-s", "-1"), "--auth-timeout-s", "-1"),
        (("tail", "x.y", "--count", "many"), "--count", "many"),
    ],
)
def test_a_bad_flag_value_is_one_line_naming_the_flag_and_value(
    args: tuple[str, ...], flag: str, value: str
) -> None:
    result = _run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert flag in lines[0] and value in lines[0]
    assert "OUTBOXHUB_" not in lines[0]


def test_a_bad_env_value_names_the_env_var_not_a_flag() -> None:
    result = _run("serve", "--ws-port", "0", OUTBOXHUB_OPS_PORT="abc")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "OUTBOXHUB_OPS_PORT" in lines[0] and "abc" in lines[0]
    assert "--ops-port" not in lines[0]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("no-such-command",), "no-such-command"),
        (("serve", "--no-such-flag"), "--no-such-flag"),
        (("token",), "--sub"),
    ],
)
def test_other_usage_errors_are_one_line_too(args: tuple[str, ...], expect: str) -> None:
    result = _run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expect in lines[0]


def test_help_is_unchanged_and_exits_zero() -> None:
    result = _run("serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "--auth-timeout-s" in result.stdout
    assert "--poll-interval-s" in result.stdout
    assert result.stderr == ""
    bare = _run()  # no command: the help, with status 2 as typer gives it
    assert bare.returncode == 2
    assert "Usage:" in bare.stdout and "serve" in bare.stdout


def test_an_unknown_store_scheme_stops_serve_with_one_error_line() -> None:
    result = _run("serve", "--store", "ftp://example/db", "--ws-port", "0", "--ops-port", "0")
    assert result.returncode == 1
    assert "ftp" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_mints_a_token_the_configured_secret_verifies() -> None:
    result = _run("token", "--sub", "svc", "--scope", "publish:orders.**", "--ttl", "30m", JWT_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "svc"
    assert claims["scopes"] == ["publish:orders.**"]
    assert 1700 <= claims["exp"] - claims["iat"] <= 1800


@pytest.mark.parametrize(
    ("args", "env", "expect"),
    [
        (("token", "--sub", "svc"), {}, "no secret"),
        (("token", "--sub", "svc", "--scope", "publish:a..b"), {"JWT_SECRET": SECRET}, "a..b"),
        (("token", "--sub", "svc", "--ttl", "soon"), {"JWT_SECRET": SECRET}, "soon"),
        (("token", "--sub", "svc"), {"JWT_SECRET": "short"}, "secret"),
    ],
)
def test_token_refuses_bad_input_with_one_clear_error(
    args: tuple[str, ...], env: dict[str, str], expect: str
) -> None:
    result = _run(*args, **env)
    assert result.returncode == 2
    assert expect in result.stderr
    assert "Traceback" not in result.stderr
