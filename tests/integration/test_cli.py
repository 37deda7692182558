"""The lorrygate command: config errors stop it before it connects anywhere."""

import os
import socket
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_three_config_mistakes_exit_before_connecting(tmp_path):
    """A config with three mistakes lists all three with section and key, exits 2, and opens no connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    config = tmp_path / "broken.ini"
    config.write_text(
        textwrap.dedent(
            f"""
            [broker:local]
            host = 127.0.0.1
            port = {port}
            keepalive = soon

            [storage:db]
            url = sqlite:///{tmp_path}/x.sqlite
            batch_size = -5

            [channel:main]
            source = local
            topics = a/#
            storage = db
            colour = blue
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "lorrygate.cli", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "3 configuration problems:"
    assert f"{config} [broker:local] keepalive: expected a whole number from 0 to 65535, got 'soon'" in lines[1]
    assert f"{config} [storage:db] batch_size: expected a whole number from 1 to 1000000, got '-5'" in lines[2]
    assert f"{config} [channel:main] colour: expected one of the keys" in lines[3]
    assert result.stdout == ""
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        connection = None
    finally:
        listener.close()
    assert connection is None, "the gateway connected to the broker despite a broken config"
    assert not (tmp_path / "x.sqlite").exists()


def test_check_command_validates_only(tmp_path):
    """`lorrygate check` validates the shipped config and exits 0 without running."""
    result = subprocess.run(
        [sys.executable, "-m", "lorrygate.cli", "check", "-c", os.path.join(ROOT, "etc", "gateway.ini")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
