"""
Real services for the integration tests, each on its own port in its own
temporary directory, started as child processes and waited for by polling.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

import attrs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns a true value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("mosquitto is not installed: run `make test`, which installs it")


@attrs.define
class Mosquitto:
    """A Mosquitto broker with persistence and a wide in-flight window."""

    directory: str
    port: int = attrs.Factory(free_port)
    #: more lines for mosquitto.conf, after the listener (TLS, passwords)
    extra: str = ""
    #: paths of the TLS files, for tests that use them
    tls: dict = attrs.Factory(dict)
    process: subprocess.Popen | None = None
    #: unacknowledged QoS 1 messages the broker sends a client at once
    max_inflight: int = 2000
    #: QoS 1 messages a session's queue holds beyond those in flight (more are dropped by the broker)
    max_queued: int = 1000000
    #: seconds between the broker's $SYS reports (None: Mosquitto's default, 10)
    sys_interval: int | None = None

    def start(self) -> "Mosquitto":
        config = os.path.join(self.directory, "mosquitto.conf")
        with open(config, "w") as handle:
            handle.write(
                f"listener {self.port} 127.0.0.1\n"
                + (self.extra or "allow_anonymous true\n")
                + "persistence true\n"
                f"persistence_location {self.directory}/\n"
                f"log_dest file {self.directory}/mosquitto.log\n"
                f"max_inflight_messages {self.max_inflight}\n"
                f"max_queued_messages {self.max_queued}\n"
                + (f"sys_interval {self.sys_interval}\n" if self.sys_interval is not None else "")
                + "max_queued_bytes 0\n"
                + ("user root\n" if os.geteuid() == 0 else "")
            )
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", config],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port) or self.process.poll() is not None, 10, "mosquitto to listen")
        if self.process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {self.process.returncode}; see {self.directory}/mosquitto.log")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def find_pg_bin(name: str) -> str:
    import glob

    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    candidates.append(shutil.which(name) or "")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"PostgreSQL's {name} is not installed: run `make test`, which installs postgresql")


@attrs.define
class PostgreSQL:
    """A PostgreSQL cluster of the test's own: initdb in a temporary directory,
    its own port, trust authentication on 127.0.0.1, stopped afterwards.

    PostgreSQL refuses to run as root, so as root the server runs as the
    ``postgres`` user (which the Debian package creates).
    """

    directory: str = ""
    port: int = attrs.Factory(free_port)
    user: str = "postgres"
    #: more server settings, such as "-c wal_level=logical"
    options: str = ""

    def _run(self, *args, check=True):
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--"] + command
        return subprocess.run(command, check=check, capture_output=True, text=True)

    def start(self) -> "PostgreSQL":
        import tempfile

        self.directory = tempfile.mkdtemp(prefix="lorrygate-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        data = os.path.join(self.directory, "data")
        self._run(find_pg_bin("initdb"), "-D", data, "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run(
            find_pg_bin("pg_ctl"), "-D", data, "-l", os.path.join(self.directory, "server.log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off {self.options}",
            "start",
        )
        wait_until(lambda: port_open(self.port), 30, "PostgreSQL to listen")
        return self

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def halt(self) -> None:
        """Stop the server, keeping its data (a database outage)."""
        self._run(find_pg_bin("pg_ctl"), "-D", os.path.join(self.directory, "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the halted server again."""
        self._run(
            find_pg_bin("pg_ctl"), "-D", os.path.join(self.directory, "data"), "-l",
            os.path.join(self.directory, "server.log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off {self.options}", "start",
        )

    def stop(self) -> None:
        if self.directory:
            self._run(find_pg_bin("pg_ctl"), "-D", os.path.join(self.directory, "data"), "-m", "fast", "-w", "stop",
                      check=False)
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""


#: Eclipse Paho's interoperability test broker, beside the project (../shared/third_party)
PAHO_TESTING = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                            "third_party", "paho.mqtt.testing", "interoperability")


@attrs.define
class ChildBroker:
    """A broker of another implementation, run as a child process on its own port;
    its output goes to ``log`` for the tests to read."""

    directory: str
    command: list
    port: int = attrs.Factory(free_port)
    cwd: str | None = None
    env: dict | None = None
    process: subprocess.Popen | None = None
    ready_timeout: float = 30
    #: what the broker writes to its output once it is up (the port open alone may be another process's: a
    #: broker that boots for seconds, RabbitMQ, found its port taken meanwhile and gave up, while the tests
    #: talked to whoever had it)
    ready_text: str = ""
    #: called before each start with the broker: writes its configuration for ``port`` (and other ports it
    #: picks); a start whose port was taken meanwhile is tried again on new ports
    configure: Any = None

    @property
    def log(self) -> str:
        return os.path.join(self.directory, "broker.log")

    def start(self) -> "ChildBroker":
        for attempt in range(3):
            if attempt:
                self.port = free_port()
            if self.configure is not None:
                self.configure(self)
            command = [part.format(port=self.port, directory=self.directory) for part in self.command]
            begun = len(self.text()) if os.path.exists(self.log) else 0
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
                                                env=dict(os.environ, **(self.env or {})), start_new_session=True)
            process = self.process
            wait_until(lambda: (port_open(self.port) and self.ready_text in self.text()[begun:])
                       or process.poll() is not None, self.ready_timeout, f"{command[0]} to listen")
            if process.poll() is None:
                return self
            said = self.text()[begun:]
            if not any(taken in said.lower() for taken in ("eaddrinuse", "address already in use")):
                break
        raise RuntimeError(f"{command} exited with {self.process.returncode}:\n{self.text()[-2000:]}")

    def text(self) -> str:
        with open(self.log, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


def paho_broker(directory: str) -> ChildBroker:
    """Paho's strict test broker (MQTT 3.1.1 and 5 on one port): it logs every protocol violation as ERROR."""
    import sys

    config = os.path.join(directory, "paho.conf")

    def configure(broker: ChildBroker) -> None:
        with open(config, "w") as handle:
            handle.write(f"listener {broker.port} 127.0.0.1\n")

    return ChildBroker(directory, [sys.executable, "startbroker.py", "-c", config], cwd=PAHO_TESTING,
                       configure=configure)


#: where `make test` installs aedes (npm) for the interop tests
NODE_PREFIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".node")


def aedes_broker(directory: str) -> ChildBroker:
    """aedes, a Node.js broker (MQTT 3.1.1), from the npm package `make test` installs into .node/."""
    script = os.path.join(NODE_PREFIX, "aedes_broker.mjs")
    shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "brokers", "aedes_broker.mjs"), script)
    return ChildBroker(directory, [shutil.which("node") or "node", script, "{port}"])


RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def rabbitmq_broker(directory: str, mqtt: bool = True, settings: str = "") -> ChildBroker:
    """A RabbitMQ node of the test's own (Debian's rabbitmq-server) on its own ports: with ``mqtt``,
    ``port`` is its MQTT plugin's listener; without, ``port`` is AMQP's, with the user lorrygate
    (password secret) instead of guest. ``settings``: more lines of its rabbitmq.conf."""

    def configure(broker: ChildBroker) -> None:
        stop_epmd(broker)  # (a start before whose port was taken: its port mapper goes with its ports)
        amqp, dist, epmd = free_port(), free_port(), free_port()
        if not mqtt:
            amqp = broker.port
        with open(os.path.join(directory, "rabbitmq.conf"), "w") as handle:
            handle.write(f"listeners.tcp.default = {amqp}\nloopback_users = none\n"
                         + (f"mqtt.listeners.tcp.default = {broker.port}\nmqtt.allow_anonymous = true\n" if mqtt else "")
                         + ("" if mqtt else "default_user = lorrygate\ndefault_pass = secret\n") + settings)
        with open(os.path.join(directory, "enabled_plugins"), "w") as handle:
            handle.write("[rabbitmq_mqtt].\n" if mqtt else "[].\n")
        broker.env = {
            "HOME": directory, "RABBITMQ_NODENAME": f"lorrygate{broker.port}@localhost",
            "RABBITMQ_DIST_PORT": str(dist), "ERL_EPMD_PORT": str(epmd),
            "RABBITMQ_MNESIA_BASE": os.path.join(directory, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(directory, "log"),
            "RABBITMQ_CONFIG_FILE": os.path.join(directory, "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(directory, "enabled_plugins"),
            "RABBITMQ_PID_FILE": os.path.join(directory, "rabbitmq.pid"),
        }

    # "Starting broker... completed with 1 plugins.": up, its listeners bound (BOOT FAILED, eaddrinuse, else)
    return ChildBroker(directory, [RABBITMQ_SERVER], cwd=directory, ready_timeout=120,
                       ready_text="Starting broker... completed", configure=configure)


def stop_epmd(broker: ChildBroker) -> None:
    """Stop the Erlang port mapper a RabbitMQ broker of the tests started on its own port."""
    epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
    if broker.env and os.path.exists(epmd):
        subprocess.run([epmd, "-kill"], env=dict(os.environ, ERL_EPMD_PORT=broker.env["ERL_EPMD_PORT"]),
                       capture_output=True)


@attrs.define
class Prometheus:
    """A Prometheus server (Debian's ``prometheus``) scraping one target every 0.5 s."""

    directory: str
    target: str
    port: int = attrs.Factory(free_port)
    process: subprocess.Popen | None = None
    #: the bearer token it scrapes with (a metrics listener's ``metrics_token``), or None
    token: str | None = None

    def start(self) -> "Prometheus":
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run `make test`, which installs it")
        config = os.path.join(self.directory, "prometheus.yml")
        with open(config, "w") as handle:
            handle.write("global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
                         "scrape_configs:\n  - job_name: lorrygate\n    static_configs:\n"
                         f"      - targets: ['{self.target}']\n"
                         + (f"    authorization:\n      credentials: '{self.token}'\n" if self.token else ""))
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.directory}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=open(os.path.join(self.directory, "prometheus.log"), "ab"), stderr=subprocess.STDOUT)
        wait_until(lambda: self.ready() or self.process.poll() is not None, 60, "prometheus to be ready")
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}; see {self.directory}/prometheus.log")
        return self

    def ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, expression: str) -> list:
        """The instant vector of a PromQL expression: [(labels, float value)]."""
        import json
        import urllib.parse
        import urllib.request

        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return [(item["metric"], float(item["value"][1])) for item in answer["data"]["result"]]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@attrs.define
class Redis:
    """A Redis server (Debian's redis-server) with an append-only file and a password."""

    directory: str
    port: int = attrs.Factory(free_port)
    password: str = "secret"
    process: subprocess.Popen | None = None

    def start(self) -> "Redis":
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(binary, os.X_OK):
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory, "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--requirepass", self.password,
             "--logfile", os.path.join(self.directory, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_until(lambda: port_open(self.port) or self.process.poll() is not None, 30, "redis-server to listen")
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.directory}/redis.log")
        return self

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@attrs.define
class Pushgateway:
    """A Prometheus Pushgateway (Debian's prometheus-pushgateway) on its own port."""

    directory: str
    port: int = attrs.Factory(free_port)
    process: subprocess.Popen | None = None
    #: (user, password) the Pushgateway asks for with HTTP Basic (its --web.config.file), or None
    basic_auth: tuple | None = None

    def start(self) -> "Pushgateway":
        binary = shutil.which("prometheus-pushgateway")
        if binary is None:
            raise RuntimeError("prometheus-pushgateway is not installed: run `make test`, which installs it")
        # (Debian's build persists to /var/lib/prometheus/pushgateway.data by default: every test run, and the
        # system's own Pushgateway, shared the metrics pushed before)
        arguments = [binary, f"--web.listen-address=127.0.0.1:{self.port}",
                     f"--persistence.file={self.directory}/pushgateway.data"]
        if self.basic_auth is not None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                import crypt  # (libxcrypt's bcrypt, which the exporter toolkit's web config takes)

            user, password = self.basic_auth
            hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 4))
            web_config = os.path.join(self.directory, "web.yml")
            with open(web_config, "w") as handle:
                handle.write(f"basic_auth_users:\n  {user}: '{hashed}'\n")
            arguments.append(f"--web.config.file={web_config}")
        self.process = subprocess.Popen(arguments,
                                        stdout=open(os.path.join(self.directory, "pushgateway.log"), "ab"),
                                        stderr=subprocess.STDOUT)
        wait_until(lambda: port_open(self.port) or self.process.poll() is not None, 30, "the pushgateway")
        if self.process.poll() is not None:
            raise RuntimeError("prometheus-pushgateway exited; see its log")
        return self

    def metrics(self) -> str:
        import base64
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics")
        if self.basic_auth is not None:
            pair = ":".join(self.basic_auth).encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
        self.process = None
