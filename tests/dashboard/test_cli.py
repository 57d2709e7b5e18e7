"""`vase dashboard`: the command, its options and the Streamlit command line it runs."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from vase.cli import app
from vase.cli.dashboard import app_path, streamlit_command


def test_dashboard_command_is_registered():
    result = CliRunner().invoke(app, ["dashboard", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output and "--db" in result.output


def test_bad_port_is_a_usage_error():
    result = CliRunner().invoke(app, ["dashboard", "--port", "70000"])
    assert result.exit_code == 2
    assert "port" in result.output


def test_streamlit_command_line():
    path = app_path()
    assert path.name == "app.py" and path.parent.name == "dashboard" and path.exists()
    assert path.resolve() == (Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
    cmd = streamlit_command(8642, "127.0.0.1")
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == str(path)
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.port"] == "8642" and flags["--server.headless"] == "true"
    assert flags["--server.address"] == "127.0.0.1" and flags["--client.showErrorDetails"] == "none"
