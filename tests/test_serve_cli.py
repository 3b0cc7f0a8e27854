"""`tapkit serve`: options, defaults and errors (uvicorn itself is not started here)."""

from __future__ import annotations

import pytest
import uvicorn
from fastapi.testclient import TestClient

from tapkit.cli import serve as serve_cli
from tapkit.cli.main import main


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--host", "--port", "--max-upload-mb", "--max-pixels", "--cache-mb", "--checkpoint", "127.0.0.1"):
        assert option in text


def fake_server(monkeypatch, calls: dict) -> None:
    """uvicorn's server, not started: records the app and the sockets it was handed."""
    def run(self, sockets=None):
        calls.update(app=self.config.app, addresses=[s.getsockname()[:2] for s in sockets])

    monkeypatch.setattr(uvicorn.Server, "run", run)


def test_serve_builds_the_app_on_localhost_with_the_given_limits(tiny_files, monkeypatch, capsys):
    calls = {}
    fake_server(monkeypatch, calls)
    code = main([
        "serve", "--checkpoint", str(tiny_files.checkpoint), "--tokenizer", str(tiny_files.tokenizer),
        "--concepts", str(tiny_files.concepts), "--device", "cpu", "--port", "0",
        "--max-upload-mb", "0.5", "--max-pixels", "5000", "--cache-mb", "64",
    ])
    assert code == 0
    ((host, port),) = calls["addresses"]
    assert host == "127.0.0.1" and port > 0
    assert f"open http://127.0.0.1:{port}/" in capsys.readouterr().err
    with TestClient(calls["app"], base_url=f"http://127.0.0.1:{port}") as client:
        limits = client.get("/healthz").json()["limits"]
        cache = client.get("/healthz").json()["cache"]
    assert limits["max_upload_bytes"] == 512 * 1024 and limits["max_pixels"] == 5000
    assert cache["max_bytes"] == 64 * 1024 * 1024
    assert calls["app"].state.tapkit.settings.allowed_hosts  # loopback: other host names are refused


def test_public_host_prints_a_warning(tiny_files, monkeypatch, capsys):
    calls = {}
    fake_server(monkeypatch, calls)
    main(["serve", "--checkpoint", str(tiny_files.checkpoint), "--device", "cpu", "--host", "0.0.0.0", "--port", "0"])
    assert "no authentication" in capsys.readouterr().err
    assert calls["addresses"][0][0] == "0.0.0.0" and calls["app"].state.tapkit.settings.allowed_hosts is None


def test_a_busy_port_fails_before_any_url_is_printed(tiny_files, monkeypatch, capsys):
    import socket

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: pytest.fail("the server must not start"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--checkpoint", str(tiny_files.checkpoint), "--device", "cpu", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and "open http" not in err
    assert err.strip().splitlines() == [f"tapkit serve: error: cannot listen on 127.0.0.1:{port}: another program is using it; pick another --port"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--checkpoint", "/no/such/model.pkl"], "not found"),
        (["--port", "70000"], "--port"),
        (["--max-pixels", "0"], "max_pixels must be >= 1"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tiny_files, monkeypatch, capsys, args, words):
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: pytest.fail("the server must not start"))
    base = ["serve", "--device", "cpu", "--port", "0"]
    if "--checkpoint" not in args:
        base += ["--checkpoint", str(tiny_files.checkpoint)]
    assert main(base + args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("192.168.1.4", False), ("example.org", False)])
def test_is_loopback(host, loopback):
    assert serve_cli.is_loopback(host) is loopback
