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


def test_paths_are_relative_to_the_config_from_any_directory(tmp_path, mosquitto):
    """`cd / && lorrygate check -c <abs>/etc/fleet.ini` passes; `lorrygate status -c <abs>` finds the gateway
    from another directory, through the control socket in the data_dir next to the config."""
    result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "check", "-c", os.path.join(ROOT, "etc", "fleet.ini")],
                            capture_output=True, text=True, timeout=60, cwd="/", env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr

    site = tmp_path / "srv" / "lg"
    (site / "strategies").mkdir(parents=True)
    (site / "schema.sql").write_text("CREATE TABLE IF NOT EXISTS {table} (time TEXT)")
    (site / "gateway.ini").write_text(textwrap.dedent(f"""
        [lorrygate]
        data_dir = state
        log_format = json

        [broker:local]
        host = 127.0.0.1
        port = {mosquitto.port}
        client_id = gw-paths-{os.getpid()}

        [storage:db]
        url = sqlite:///data/lorrygate.sqlite

        [channel:main]
        topics = paths-{os.getpid()}/#
        """))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=ROOT)
    (site / "data").mkdir()
    log = open(tmp_path / "gw.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "lorrygate.cli", "-c", "srv/lg/gateway.ini"], cwd=tmp_path,
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        from tests.servers import wait_until

        wait_until(lambda: (site / "state" / "lorrygate.sock").exists() or process.poll() is not None, 30,
                   "the control socket next to the config")
        assert process.poll() is None, (tmp_path / "gw.log").read_text()
        status = subprocess.run([sys.executable, "-m", "lorrygate.cli", "status", "-c", str(site / "gateway.ini")],
                                capture_output=True, text=True, timeout=60, cwd=elsewhere, env=env)
        assert status.returncode == 0, status.stderr
        assert "storage db" in status.stdout
        assert not (tmp_path / "state").exists() and not (elsewhere / "state").exists()
        assert (site / "data" / "lorrygate.sqlite").exists()
    finally:
        process.terminate()
        assert process.wait(30) == 0
        log.close()


def test_an_upgrade_does_not_leave_a_spool_behind(tmp_path):
    """Before 0.1.0 a relative data_dir was relative to the working directory: a spool there, and nothing
    next to the config, is a configuration problem that says where each is."""
    (tmp_path / "var" / "spool" / "db").mkdir(parents=True)
    (tmp_path / "var" / "spool" / "db" / "target.json").write_text('{"kind": "sqlite", "target": "sqlite:///x"}')
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "gateway.ini").write_text(textwrap.dedent("""
        [broker:local]
        host = 127.0.0.1

        [storage:db]
        url = sqlite:///var/x.sqlite

        [channel:main]
        topics = a/#
        """))
    result = subprocess.run([sys.executable, "-m", "lorrygate.cli", "check", "-c", "etc/gateway.ini"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 2
    assert f"[lorrygate] data_dir: expected a path that names lorrygate's files (data_dir is var when not given), " \
           f"got 'var' is relative to the config file's folder since lorrygate 0.1.0, so {tmp_path}/etc/var, which " \
           f"does not exist; {tmp_path}/var (relative to the working directory, as before) holds lorrygate's files" \
           in result.stderr, result.stderr


def test_a_failing_stop_exits_instead_of_hanging_on_the_storage_threads(tmp_path):
    """If the graceful stop fails, the storages' threads would keep the process alive for ever: it exits, saying so."""
    import signal
    import time

    config = tmp_path / "gateway.ini"
    config.write_text(textwrap.dedent(f"""
        [lorrygate]
        data_dir = {tmp_path}
        control = off

        [source:tick]
        type = poll
        command = echo 1
        interval = 1s
        topic = a/b/c/d/data.json

        [storage:db]
        url = sqlite:///{tmp_path}/db.sqlite

        [channel:main]
        source = tick
        topics = #
        """))
    script = textwrap.dedent(f"""
        import sys
        from lorrygate.service.gateway import Gateway

        async def broken_stop(self):
            raise RuntimeError("a stop that breaks")

        Gateway.stop = broken_stop
        from lorrygate.cli import main
        sys.exit(main(["-c", {str(config)!r}]))
        """)
    log = tmp_path / "gw.log"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                               cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while "lorrygate is running" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "lorrygate is running" in log.read_text(), log.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 1
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "stopping failed: a stop that breaks" in text
    assert "lorrygate stopped without its graceful stop; exiting now" in text
