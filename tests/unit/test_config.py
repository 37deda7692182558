"""Config: every problem reported at once with section and key; secrets stay hidden."""

import glob
import json
import os
import textwrap

import pytest

from lorrygate.config import load, loads
from lorrygate.errors import ConfigError

GOOD = """
[broker:local]
host = localhost

[storage:db]
url = sqlite:///var/test.sqlite

[channel:main]
source = local
topics = mqttkit-1/#
storage = db
"""


def problems(text: str) -> list:
    with pytest.raises(ConfigError) as info:
        loads(textwrap.dedent(text), source="gateway.ini")
    return [str(problem) for problem in info.value.problems]


def test_good_config_gives_settings():
    """A minimal config loads, with the documented defaults filled in."""
    settings = loads(GOOD)
    (channel,) = settings.channels
    assert (channel.name, channel.topics, channel.qos, channel.strategy, channel.decoders) == (
        "main", ("mqttkit-1/#",), 1, "wan", ("ttn", "json", "value"))
    broker = settings.brokers["local"]
    assert (broker.port, broker.clean_session, broker.protocol) == (1883, False, "3.1.1")
    assert settings.storages["db"].path == "var/test.sqlite"


def test_three_mistakes_are_reported_together():
    """Three mistakes in three sections come out in one error, each with section and key."""
    found = problems(
        GOOD.replace("host = localhost", "host = localhost\nport = 99999")
        .replace("url = sqlite:///var/test.sqlite", "url = mysql://nope")
        .replace("topics = mqttkit-1/#", "topics = mqttkit-1/#/x")
    )
    assert found == [
        "gateway.ini [broker:local] port: expected a whole number from 1 to 65535, got '99999'",
        "gateway.ini [storage:db] url: expected a storage URL: sqlite:///PATH, postgresql://USER:PASSWORD@HOST:5432/"
        "DATABASE, crate://HOST:4200/, crate+https://USER:PASSWORD@HOST:4200/, mqtt://USER:PASSWORD@HOST:1883/, "
        "kafka://HOST:9092/, ws://127.0.0.1:9482/ (a live page), prometheus://, pushgateway://HOST:9091/JOB or tributary:// (a Tributary graph), "
        "got 'mysql://nope'",
        "gateway.ini [channel:main] topics: expected valid MQTT topic filters ('mqttkit-1/#/x': '#' must be "
        "the last level of a topic filter), got 'mqttkit-1/#/x'",
    ]


@pytest.mark.parametrize(
    "change, expected",
    [
        (("storage = db", "storage = db\ncolour = blue"),
         "[channel:main] colour: expected one of the keys claim_idle, consumer, convert, ddl, decode_timeout, decoders, drop, "
         "error_topic, exchange, group, headers, hook, ignore, max_records, merge, metadata, mode, payload_field, prefetch, qos, queue, rename, "
         "retained, source, start, storage, strategy, tags, timezone, topic_field, topics, transform, values, got unknown key 'colour'"),
        (("[storage:db]", "[store:db]"), "[store:db]: expected a section named [lorrygate], [broker:NAME], [source:NAME], [storage:NAME], [strategy:NAME]"),
        (("source = local", "source = remote"),
         "[channel:main] source: expected the name of a [broker:NAME] or [source:NAME] section (local), got 'remote'"),
        (("storage = db", "storage = db\nstrategy = moon"),
         "[channel:main] strategy: expected one of the strategies ahoy, chirpstack, "),
        (("storage = db", "storage = db\ndecoders = json, yaml"),
         "[channel:main] decoders: expected decoder names from ahoy, airrohr, cbor, chirpstack, csv, "),
        (("host = localhost", "port = 1883"), "[broker:local] host: expected a value (this key is required), got nothing"),
        (("storage = db", "storage = db\nqos = 3"), "[channel:main] qos: expected a whole number from 0 to 2, got '3'"),
        (("host = localhost", "host = localhost\nclean_session = maybe"), "clean_session: expected a boolean"),
        (("host = localhost", "host = localhost\nkeepalive = 1h"), "keepalive: expected a whole number"),
    ],
    ids=["unknown-key", "unknown-section", "missing-broker", "unknown-strategy", "unknown-decoder",
         "missing-key", "bad-qos", "bad-bool", "bad-int"],
)
def test_each_mistake_is_named(change, expected):
    """Each kind of mistake gives a message naming section, key, expectation and value."""
    found = problems(GOOD.replace(*change))
    assert any(expected in problem for problem in found), found


@pytest.mark.parametrize("change, expected", [
    (("storage = db", "storage = db\ntimezone = " + "x" * 300), "[channel:main] timezone: expected an IANA time zone"),
    (("url = sqlite:///var/test.sqlite", "url = sqlite:///var/test.sqlite\nspool_max = " + "9" * 400),
     "[storage:db] spool_max: expected a size such as 100MB"),
    (("url = sqlite:///var/test.sqlite", "url = crate://[strategy:plugs]:4200/"),
     "[storage:db] url: expected a storage URL"),
    (("[channel:main]", "[source:web]\ntype = poll\nurl = http://[\ntopic = a/b\n[channel:main]"),
     "[source:web] url: expected an http:// or https:// URL with a valid host and port"),
], ids=["timezone-too-long", "size-beyond-float", "crate-bracketed-host", "http-unclosed-bracket"])
def test_values_the_parsers_raised_on_are_mistakes_named(change, expected):
    """Values found by mutating the configs of the tests: each raised another exception than the config's
    (an OSError "File name too long" of zoneinfo, an OverflowError, urlsplit's ValueError "Invalid IPv6 URL"),
    which reached the command line as a traceback, and no other mistake of the file was told."""
    found = problems(GOOD.replace(*change))
    assert any(expected in problem for problem in found), found


@pytest.mark.parametrize("written, url", [
    ("type = sqlite\npath = /srv/lorry.sqlite", "url = sqlite:////srv/lorry.sqlite"),
    ("type = SQLite3\ndatabase = var/lorry.db", "url = sqlite:///var/lorry.db"),
    ("type = postgres\nhost = db.example\nuser = lorry\npassword = s3cret\ndatabase = telemetry",
     "url = postgresql://lorry:PASSWORD@db.example:5432/telemetry, the password from the environment as ${ENV:NAME}"),
    ("type = cratedb\nhost = crate.example", "url = crate://crate.example:4200/"),
    ("", "sqlite:///PATH, postgresql://USER:PASSWORD@HOST/DB or crate://HOST:4200/"),
], ids=["sqlite", "sqlite3-database", "postgres", "cratedb", "nothing"])
def test_a_storage_written_as_other_tools_write_it_is_told_its_url(written, url):
    """``type = sqlite`` and ``path = ...`` (as Telegraf's or a compose file's settings read): the problem of the
    missing url writes the url they mean, without the password."""
    found = problems(GOOD.replace("url = sqlite:///var/test.sqlite", written))
    missing = [problem for problem in found if "[storage:db] url:" in problem]
    assert len(missing) == 1 and url in missing[0], found
    assert not any("s3cret" in problem for problem in found)


@pytest.mark.parametrize("change, expected", [
    (("storage = db", "storage = db\nstrateyg = tasmota"), "got unknown key 'strateyg' (did you mean 'strategy'?)"),
    (("[storage:db]", "[storages:db]"), "got [storages:db] (did you mean [storage:db]?)"),
    (("[channel:main]", "[chanel:main]"), "got [chanel:main] (did you mean [channel:main]?)"),
    (("storage = db", "storage = dbs"), "got 'dbs' (did you mean 'db'?)"),
    (("source = local", "source = locla"), "got 'locla' (did you mean 'local'?)"),
    (("storage = db", "storage = db\nstrategy = tasmotta"), "got 'tasmotta' (did you mean 'tasmota'?)"),
    (("storage = db", "storage = db\ndecoders = jsno, yaml"), "got 'jsno' (did you mean 'json'?), 'yaml'"),
], ids=["key", "section", "channel-section", "storage", "source", "strategy", "decoders"])
def test_a_typo_is_told_the_name_it_was_meant_to_be(change, expected):
    """A name one or two letters off a known one: the problem says which was meant."""
    found = problems(GOOD.replace(*change))
    assert any(expected in problem for problem in found), found


@pytest.mark.parametrize("change, expected", [
    (("[channel:main]", "[source:api]\ntype = http\nport = 24699\n[channel:main]"),
     "[source:api] port: expected one of the keys export, export_stall, export_token, listen, max_connections, "
     "max_line, timeout, tls_cert, tls_key, token, type, got unknown key 'port' (did you mean listen = PORT, or "
     "HOST:PORT?)"),
    (("[channel:main]", "[source:logs]\ntype = files\nglob = /var/log/*.csv\n[channel:main]"),
     "got unknown key 'glob' (did you mean path = GLOB?)"),
    (("host = localhost", "url = mqtts://me:s3cret@broker.example:8883"),
     "got unknown key 'url' (a broker is given by its keys: host = broker.example, port = 8883, tls = true, "
     "username = me, password = ${ENV:NAME})"),
    (("host = localhost", "type = amqp\nuri = amqp://rabbit.example/%2Fsensors"),
     "got unknown key 'uri' (a broker is given by its keys: type = amqp, host = rabbit.example, vhost = /sensors)"),
    (("host = localhost", "host = localhost\nuser = me"), "got unknown key 'user' (did you mean username?)"),
], ids=["http-port", "files-glob", "broker-url", "amqp-uri", "broker-user"])
def test_a_key_as_other_tools_name_it_is_told_the_key_it_means(change, expected):
    """``port = 24699`` for the HTTP source (the key is ``listen``) was told every key of every type of source and
    ``did you mean 'export'?``; a broker written as a URL was told nothing of host and port. The problem lists the
    keys of the source's type and names the key meant; a broker's URL is written as its keys, never its
    password."""
    found = problems(GOOD.replace(*change))
    assert any(expected in problem for problem in found), found
    assert not any("s3cret" in problem for problem in found)


@pytest.mark.parametrize("key, expected", [
    ("columns = temperature, humidity", "got unknown key 'columns' (columns is a key of a [decoder:NAME] section of "
                                        "type = csv, which the channel names: decoders = NAME, json)"),
    ("output = json", "(output is a key of a [strategy:NAME] section of type = meshtastic or rtl_433 or zigbee2mqtt, "
                      "which the channel names: strategy = NAME)"),
    ("port = 1884", "(port is a key of a [broker:NAME] section, which the channel names: source = NAME)"),
    ("url = sqlite:///x", "(url is a key of a [source:NAME] section of type = poll, which the channel names: source "
                          "= NAME; or of a [storage:NAME] section, which the channel names: storage = NAME)"),
], ids=["decoder", "strategy", "broker", "source-or-storage"])
def test_a_channels_key_of_a_section_it_names_is_told_that_section(key, expected):
    """``columns`` in a channel (the CSV decoder's key) was told the channel's 33 keys: the problem names the
    section the key belongs in and how the channel names it."""
    found = problems(GOOD.replace("storage = db", f"storage = db\n{key}"))
    assert any(expected in problem for problem in found), found


def test_a_relative_sqlite_path_below_a_top_level_folder_is_told_the_file_it_is(tmp_path):
    """``sqlite:///tmp/x.sqlite`` is the relative path ``tmp/x.sqlite`` (three slashes, as SQLAlchemy reads it):
    a user who meant /tmp/x.sqlite found the rows in a ``tmp`` folder next to the config. A warning names the
    file and the URL of /tmp/x.sqlite; a folder of that name next to the config, ``var/``, and four slashes are
    not warned of."""
    text = GOOD.replace("url = sqlite:///var/test.sqlite", "url = sqlite:///tmp/x.sqlite")
    (warning,) = loads(text, source="gateway.ini", base_dir=str(tmp_path)).warnings
    assert warning == (f"gateway.ini [storage:db] url: sqlite:///tmp/x.sqlite is the file {tmp_path}/tmp/x.sqlite "
                       f"(three slashes: a path relative to {tmp_path}); for /tmp/x.sqlite, write "
                       "sqlite:////tmp/x.sqlite")
    assert loads(GOOD, base_dir=str(tmp_path)).warnings == ()
    assert loads(text.replace("sqlite:///tmp", "sqlite:////tmp"), base_dir=str(tmp_path)).warnings == ()
    (tmp_path / "tmp").mkdir()
    assert loads(text, base_dir=str(tmp_path)).warnings == ()


def test_a_name_close_to_none_gets_no_guess():
    found = problems(GOOD.replace("storage = db", "storage = db\nstrategy = galaxy"))
    assert not any("did you mean" in problem for problem in found), found


def test_no_channel_is_a_problem():
    """A config without channels would do nothing; it is rejected."""
    assert problems("[broker:local]\nhost = x\n") == [
        "gateway.ini [channel:NAME]: expected at least one [channel:NAME] section, got none"
    ]


def test_broken_ini_syntax_is_reported():
    """Text that is not ini at all is reported with the parser's line number."""
    assert problems("host = x\n") == [
        "gateway.ini line 1: expected a [section] header before the first key, got 'host = x'"
    ]
    assert problems(GOOD + "[channel:main]\n") == [
        "gateway.ini line 12 [channel:main]: expected each section once, got a second one"
    ]
    assert problems(GOOD + "no equals sign here\n") == [
        "gateway.ini line 12: expected 'key = value' or a [section] header, got 'no equals sign here'"
    ]
    # a header without its closing bracket was read as a key "[channel" (":" separates keys too) of the
    # section before it: "unknown key '[channel'"
    assert problems(GOOD + "[channel:second\ntopics = b/#\n") == [
        "gateway.ini line 12: expected a [section] header closed by ']', got '[channel:second'"
    ]
    assert loads(GOOD + "[channel:second]   # a comment after it\nsource = local\ntopics = b/#\n"
                 ).channels[1].name == "second"


def test_secret_from_environment_is_never_shown(monkeypatch):
    """${ENV:NAME} fills a password; its value appears in no repr and no message."""
    monkeypatch.setenv("LORRYGATE_TEST_PASSWORD", "hunter2")
    settings = loads(GOOD.replace("host = localhost",
                                  "host = localhost\nusername = gw\npassword = ${ENV:LORRYGATE_TEST_PASSWORD}"))
    broker = settings.brokers["local"]
    assert broker.password.reveal() == "hunter2"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(broker.password)
    found = problems(GOOD.replace("host = localhost",
                                  "host = localhost\nusername = gw\npassword = ${ENV:LORRYGATE_UNSET_VAR}"))
    assert found == [
        "gateway.ini [broker:local] password: expected environment variable LORRYGATE_UNSET_VAR to be set "
        "(referenced as ${ENV:LORRYGATE_UNSET_VAR}), got a hidden value"
    ]


def test_secret_from_file(tmp_path):
    """${FILE:path} reads a secret from a file relative to the config."""
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "gw.ini").write_text(GOOD.replace("host = localhost", "host = localhost\nusername = gw\npassword = ${FILE:pw}"))
    assert load(str(tmp_path / "gw.ini")).brokers["local"].password.reveal() == "s3cret"


def test_missing_file():
    """A config path that does not exist is one clear problem."""
    with pytest.raises(ConfigError, match="^1 configuration problem:\n  /nonexistent/gateway.ini: expected a readable config file, got No such file"):
        load("/nonexistent/gateway.ini")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(os.path.dirname(__file__), "../../etc/*.ini"))),
                         ids=os.path.basename)
def test_shipped_configs_load(path):
    """Every ini file shipped in etc/ is valid, so the examples cannot rot."""
    assert load(path).channels


def test_single_broker_and_storage_may_be_left_out():
    """With one broker and one storage, a channel need not name them; with two it must."""
    text = GOOD.replace("source = local\n", "").replace("storage = db\n", "")
    (channel,) = loads(text).channels
    assert (channel.source, channel.storage) == ("local", "db")
    found = problems(text + "\n[storage:other]\nurl = sqlite:///y.sqlite\n")
    assert found == [
        "gateway.ini [channel:main] storage: expected a value (required unless exactly one [storage:NAME] is defined), "
        "got nothing"
    ]


def test_inline_comment_gets_a_hint():
    """A comment after a value is not one; the error says so."""
    found = problems(GOOD.replace("host = localhost", "host = localhost\nkeepalive = 30   # seconds"))
    assert found == [
        "gateway.ini [broker:local] keepalive: expected a whole number from 0 to 65535, got '30   # seconds' "
        "(comments go on their own line, not after a value)"
    ]


def test_a_311_password_needs_a_username():
    """MQTT 3.1.1 sends a password only with a user name: a password alone is a config error naming the fix."""
    assert problems(GOOD.replace("host = localhost", "host = localhost\npassword = secret")) == [
        "gateway.ini [broker:local] password: expected a username too: MQTT 3.1.1 sends a password only with a "
        "user name (MQTT-3.1.2-22), or protocol = 5, got a password without a username"
    ]


def test_a_config_that_is_not_utf8_is_one_clear_problem(tmp_path):
    """A config file with bytes that are not UTF-8 is reported with the byte and its offset, not a traceback."""
    (tmp_path / "gw.ini").write_bytes(GOOD.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path / "gw.ini"))
    (problem,) = info.value.problems
    assert "expected a UTF-8 text file, got byte 0xe9 at offset" in str(problem)


@pytest.mark.parametrize("url, shown", [
    ("postgresql://gw:s3cret@db/x", "postgresql://gw:***@db/x"),
    ("postgresql://gw@db/x?password=s3cret&sslmode=require", "postgresql://gw@db/x?password=***&sslmode=require"),
    ("crate://db1:4200,db2:4200/", "crate://db1:4200,db2:4200/"),
    ("sqlite:////var/lib/lorrygate/gw.sqlite", "sqlite:////var/lib/lorrygate/gw.sqlite"),
    ("sqlite:///var/gw.sqlite", "sqlite:///var/gw.sqlite"),
], ids=["user-info", "query-parameter", "no-password", "sqlite-absolute", "sqlite-relative"])
def test_storage_urls_never_show_a_password(url, shown):
    """A storage URL prints with every password masked, in the user info or in the query; otherwise as written
    (a SQLite URL printed as sqlite://var/lib/..., sqlite:/var/..., which name other files)."""
    from lorrygate.config.values import storage_url

    assert str(storage_url(url)) == shown


GENERATED = "p@ss/w:rd?#%x+1"  # a generated password, with every character a URL gives a meaning


@pytest.mark.parametrize("url", ["postgresql://gw:${ENV:LORRYGATE_TEST_PASSWORD}@db:5432/telemetry",
                                 "postgresql://gw@db:5432/telemetry?password=${ENV:LORRYGATE_TEST_PASSWORD}",
                                 "crate+https://gw:${ENV:LORRYGATE_TEST_PASSWORD}@db:4200/",
                                 "mqtt://gw:${ENV:LORRYGATE_TEST_PASSWORD}@db:1883/"])
def test_a_password_from_a_reference_goes_into_a_url_as_it_is(monkeypatch, url):
    """docs/storage.rst puts the password in the environment: url = postgresql://gw:${ENV:PGPASSWORD}@db/x. A
    generated password with @ / : ? # % made another URL (p@ss/w:rd: the host ss, the database w:rd@db/x, and
    the rest of the password shown in the logs as part of them). In the user info and the query, a reference's
    value now goes in percent-encoded: the host, the port and the password are the ones meant."""
    from psycopg.conninfo import conninfo_to_dict

    from lorrygate.storage.cratedb import CrateStorage

    monkeypatch.setenv("LORRYGATE_TEST_PASSWORD", GENERATED)
    storage = loads(GOOD.replace("url = sqlite:///var/test.sqlite", f"url = {url}")).storages["db"]
    assert GENERATED not in str(storage.url) and "p@ss" not in repr(storage)
    if storage.kind == "postgresql":
        found = conninfo_to_dict(storage.url.raw)
        assert (found["host"], found["port"], found["dbname"], found["password"]) == ("db", "5432", "telemetry",
                                                                                     GENERATED)
    elif storage.kind == "crate":
        crate = CrateStorage.from_settings(storage, None, {})
        assert (crate.nodes, crate.username, crate.password) == (("https://db:4200",), "gw", GENERATED)
    else:
        assert (storage.broker.host, storage.broker.port, storage.broker.password.reveal()) == ("db", 1883, GENERATED)


def test_a_reference_elsewhere_in_a_url_or_outside_one_goes_in_as_it_is(monkeypatch):
    """A host from the environment, a whole URL from a file: taken as written (only the user info and the query
    are encoded)."""
    from lorrygate.config.values import interpolate

    monkeypatch.setenv("LORRYGATE_TEST_HOST", "db.example:5433")
    monkeypatch.setenv("LORRYGATE_TEST_URL", "postgresql://gw:s3cr%40t@db/x")
    assert interpolate("postgresql://gw@${ENV:LORRYGATE_TEST_HOST}/x", ".") == "postgresql://gw@db.example:5433/x"
    assert interpolate("${ENV:LORRYGATE_TEST_URL}", ".") == "postgresql://gw:s3cr%40t@db/x"
    assert interpolate("a ${ENV:LORRYGATE_TEST_HOST} b", ".") == "a db.example:5433 b"


def test_control_on_tcp_stays_on_this_machine_unless_it_has_a_token():
    """control = tcp:PORT binds loopback; another interface without a control_token is a problem."""
    settings = loads(GOOD + "[lorrygate]\ncontrol = tcp:8642\n")
    assert settings.gateway.control_endpoint == "tcp:8642:interface=127.0.0.1"
    assert problems(GOOD + "[lorrygate]\ncontrol = tcp:8642:interface=0.0.0.0\n") == [
        "gateway.ini [lorrygate] control: expected a loopback interface (tcp:PORT:interface=127.0.0.1), or a "
        "control_token (from ${FILE:path}) for an endpoint others can reach, got 'tcp:8642:interface=0.0.0.0'"
    ]
    token = loads(GOOD + "[lorrygate]\ncontrol = tcp:8642:interface=0.0.0.0\ncontrol_token = t0ken\n")
    assert token.gateway.control_token.reveal() == "t0ken" and "t0ken" not in repr(token)


def test_files_saved_with_a_byte_order_mark_and_files_of_bytes(tmp_path):
    """Windows' Notepad starts a UTF-8 file with a byte order mark: the config's first line was "a key before the
    first section's header", a ${FILE:...} password had the mark in it. A secret file or a DDL file of bytes that
    are not UTF-8 was a traceback; it is its key's problem, the secret's bytes not shown."""
    (tmp_path / "secret").write_bytes(b"\xef\xbb\xbfs3cret\r\n")
    (tmp_path / "binary").write_bytes(b"\x30\x82\x01\xff")
    (tmp_path / "ddl.sql").write_bytes(b"\xef\xbb\xbfCREATE TABLE IF NOT EXISTS {table} (\"time\" TEXT);\n")
    (tmp_path / "ddl.bin").write_bytes(b"\xac\xed")
    broker = "[broker:local]\nhost = localhost\nusername = gw\npassword = ${FILE:%s}\n"
    config = tmp_path / "gateway.ini"
    config.write_bytes(b"\xef\xbb\xbf" + GOOD.replace("[broker:local]\nhost = localhost\n", broker % "secret")
                       .replace("url = sqlite:///var/test.sqlite", f"url = sqlite:///var/test.sqlite\nddl = @{tmp_path}/ddl.sql")
                       .encode())
    settings = load(str(config))
    assert settings.brokers["local"].password.reveal() == "s3cret"
    assert settings.storages["db"].ddl is not None
    config.write_text(GOOD.replace("[broker:local]\nhost = localhost\n", broker % "binary")
                      .replace("url = sqlite:///var/test.sqlite", f"url = sqlite:///var/test.sqlite\nddl = @{tmp_path}/ddl.bin"))
    with pytest.raises(ConfigError) as raised:
        load(str(config))
    assert [str(problem).split(": ", 1)[1] for problem in raised.value.problems] == [
        f"expected a UTF-8 text file at {tmp_path}/binary (referenced as ${{FILE:binary}}), not one with bytes that "
        "are not UTF-8 (from offset 1), got a hidden value",
        f"expected a DDL file of UTF-8 text at {tmp_path}/ddl.bin, not one with byte 0xac at offset 0, got "
        f"'@{tmp_path}/ddl.bin'"]


def test_a_brokers_certificates_without_tls_are_a_problem(tmp_path):
    """``tls_ca`` (or a client certificate) without ``tls = true`` was unread, and the connection, its password
    with it, went in plain text; the pipeline language refused it already."""
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    broker = f"[broker:local]\nhost = localhost\nusername = gw\npassword = pw\ntls_ca = {pem}\n"
    text = GOOD.replace("[broker:local]\nhost = localhost\n", broker)
    assert problems(text) == [
        "gateway.ini [broker:local] tls: expected tls = true (tls_ca is for TLS connections; without it the "
        "connection, and its password, go in plain text), got tls = false"]
    assert loads(text.replace("tls_ca", "tls = true\ntls_ca")).brokers["local"].port == 8883


def test_a_live_page_url_with_a_password_is_a_problem():
    """``ws://admin:secret@0.0.0.0:9482/`` read as a live page kept to whoever knew the password; nobody was asked
    for one."""
    assert problems(GOOD + "[storage:live]\nurl = ws://admin:s3cret@0.0.0.0:9482/\n") == [
        "gateway.ini [storage:live] url: expected a ws:// URL without a user or password: the live page asks nobody "
        "for one (it has no authentication of its own); put a reverse proxy that authenticates in front of it, got "
        "'ws://admin:***@0.0.0.0:9482/'"]


def test_a_unix_socket_path_longer_than_the_kernel_takes_is_a_problem():
    """A data_dir of 100 bytes: the gateway ran without its control endpoint (no status, no flush, no /health),
    saying so only in its log; a socket source's path the same, saying so only in its status. 107 bytes is the
    most a Unix socket's path may have."""
    deep = "/srv/" + "d" * 80 + "/var"  # (+ /lorrygate.sock: 104 bytes)
    assert loads(GOOD + f"[lorrygate]\ndata_dir = {deep}\n").gateway.control_endpoint == f"unix:{deep}/lorrygate.sock"
    assert loads(GOOD + f"[lorrygate]\ndata_dir = {deep}\ncontrol = unix:/srv/{'c' * 102}\n")
    assert problems(GOOD + f"[lorrygate]\ndata_dir = {deep}xxxx\n") == [
        "gateway.ini [lorrygate] data_dir: expected a Unix socket path of at most 107 bytes for the control endpoint: "
        "give control = unix:/run/lorrygate/control.sock (or tcp:PORT), or a shorter data_dir (the socket is "
        f"<data_dir>/lorrygate.sock), got the socket '{deep}xxxx/lorrygate.sock' (108 bytes)"]
    assert loads(GOOD + f"[lorrygate]\ndata_dir = {deep}xxxx\ncontrol = off\n").gateway.control_endpoint is None
    assert problems(GOOD + f"[lorrygate]\ncontrol = unix:/srv/{'c' * 103}\n") == [
        "gateway.ini [lorrygate] control: expected a Unix socket path of at most 107 bytes for the control endpoint: "
        f"give a shorter one, or control = tcp:PORT, got the socket '/srv/{'c' * 103}' (108 bytes)"]
    source = "[source:s]\ntype = socket\npath = /run/{}\n"
    assert problems(GOOD + source.format("s" * 103)) == [
        f"gateway.ini [source:s] path: expected a Unix socket path of at most 107 bytes: give a shorter one "
        f"(/run/lorrygate/sensors.sock), got '/run/{'s' * 103}' (108 bytes)"]
    assert loads(GOOD + source.format("s" * 102)).sources["s"].path == "/run/" + "s" * 102


def test_a_prometheus_storage_needs_the_metrics_listener_and_beyond_loopback_its_token():
    """``url = prometheus://`` is served on the metrics listener: with ``metrics`` off its values went nowhere and
    nothing said so. Beyond loopback it serves the fleet's values to anyone, so it needs a metrics_token, as an
    export does; a pushgateway:// storage and the gateway's own metrics need neither."""
    gauges = GOOD.replace("storage = db\n", "storage = db, gauges\n") + "\n[storage:gauges]\nurl = prometheus://\n"
    assert problems(gauges) == [
        "gateway.ini [storage:gauges] url: expected a metrics listener to serve it on ([lorrygate] metrics = "
        "127.0.0.1:9481, scraped at /metrics), or pushgateway://HOST:9091/JOB to push the values, got prometheus:// "
        "with [lorrygate] metrics off"]
    assert problems(gauges + "[lorrygate]\nmetrics = 0.0.0.0:9481\n") == [
        "gateway.ini [lorrygate] metrics: expected a metrics_token (from ${ENV:...} or ${FILE:...}) for a listener "
        "others can reach that serves the fleet's values (storage gauges, prometheus://), or a loopback address "
        "(127.0.0.1:PORT), got metrics = 0.0.0.0:9481 without a token"]
    assert loads(gauges + "[lorrygate]\nmetrics = 9481\n").gateway.metrics == ("127.0.0.1", 9481)
    token = loads(gauges + "[lorrygate]\nmetrics = 0.0.0.0:9481\nmetrics_token = t0ken\n")
    assert token.gateway.metrics_token.reveal() == "t0ken" and "t0ken" not in repr(token)
    assert loads(GOOD + "[lorrygate]\nmetrics = 0.0.0.0:9481\n").gateway.metrics_token is None
    loads(GOOD.replace("storage = db\n", "storage = db, pushed\n") + "\n[storage:pushed]\n"
          "url = pushgateway://127.0.0.1:9091/sensors\n")


def test_an_export_others_can_reach_needs_a_token():
    """``export = true`` on 0.0.0.0 without a token answered the fleet's data to anyone on the network who asked.
    It is a problem, as a control endpoint beyond loopback is; on loopback, or with a token, it is not."""
    http = "[source:api]\ntype = http\nexport = true\n{}[channel:c]\nsource = api\n[storage:db]\nurl = sqlite:///x\n"
    assert problems(http.format("listen = 0.0.0.0:24642\n")) == [
        "gateway.ini [source:api] export: expected an export_token (or a token; from ${ENV:...} or ${FILE:...}) for "
        "an export others can reach, or a loopback listen address (127.0.0.1:PORT), got export = true on "
        "0.0.0.0:24642 without a token"]
    for fine in ("", "listen = 127.0.0.1:24642\n", "listen = [::1]:24642\n", "listen = 0.0.0.0:24642\ntoken = t\n",
                 "listen = 0.0.0.0:24642\nexport_token = t\n"):
        loads(http.format(fine))
    loads(http.format("listen = 0.0.0.0:24642\n").replace("export = true", "export = false"))


def test_an_http_source_beyond_loopback_without_a_token_or_tls_is_warned_of(tmp_path):
    """Whoever reached a source on 0.0.0.0 without a token stored what they liked, and a token over plain HTTP
    travels in clear: both were said nowhere. A warning each (devices that send no token, an Ecowitt station,
    may have a source of their own on a network of their own); on loopback, or with token and HTTPS, none."""
    pem = tmp_path / "api.pem"
    pem.write_text("x")
    http = "[source:api]\ntype = http\n{}[channel:c]\nsource = api\nstrategy = topic\n[storage:db]\nurl = sqlite:///x\n"
    assert loads(http.format("listen = 0.0.0.0:24642\n"), source="gw.ini").warnings == (
        "gw.ini [source:api] listen: the HTTP source on 0.0.0.0:24642 stores whatever anyone who reaches it posts, "
        "without authentication; set token = ${ENV:...} (devices that send no token belong on a network of their "
        "own, or keep it on 127.0.0.1 behind a reverse proxy that authenticates)",)
    assert loads(http.format("listen = 0.0.0.0:24642\ntoken = ${ENV:HOME}\n"), source="gw.ini").warnings == (
        "gw.ini [source:api] listen: the HTTP source on 0.0.0.0:24642 takes its token over plain HTTP, where anyone "
        "on the way reads it; set tls_cert and tls_key (HTTPS), or keep it on 127.0.0.1 behind a reverse proxy "
        "that speaks HTTPS",)
    for fine in ("", "listen = [::1]:24642\n", f"listen = 0.0.0.0:24642\ntoken = ${{ENV:HOME}}\n"
                                                f"tls_cert = {pem}\ntls_key = {pem}\n"):
        assert loads(http.format(fine)).warnings == ()


def test_a_live_view_beyond_loopback_is_warned_of():
    """A WebSocket sink on 0.0.0.0 serves every row to anyone on the network (it has no authentication): a
    warning says so; on loopback nothing is said."""
    pytest.importorskip("autobahn")
    text = "[broker:b]\nhost = h\n[channel:c]\ntopics = a/#\nstorage = live\n[storage:live]\nurl = {}\n"
    assert loads(text.format("ws://0.0.0.0:9482/"), source="gateway.ini").warnings == (
        "gateway.ini [storage:live] url: the live view on 0.0.0.0 serves every row its channels store to whoever "
        "reaches that address, without authentication; keep it on 127.0.0.1 behind a reverse proxy that "
        "authenticates, where others than this machine look at it",)
    assert loads(text.format("ws://127.0.0.1:9482/")).warnings == ()


def test_a_files_source_with_a_header_and_no_csv_decoder_is_warned_of():
    """``header = true`` puts the file's header line before each line, which only a csv decoder reads: a channel
    without one made every line a dead letter, silently at the start. A warning says so; a csv decoder (the
    built-in, or a [decoder:NAME] of type csv), a data.csv topic or a decoder of your own is not warned of."""
    base = ("[source:logs]\ntype = files\npath = /var/log/sensors/*.csv\nheader = true\ntopic = plant/{stem}\n"
            "[storage:db]\nurl = sqlite:///x\n[channel:c]\nsource = logs\nstrategy = topic\n")
    assert loads(base, source="gateway.ini").warnings == (
        "gateway.ini [channel:c]: source logs has header = true, so each line comes behind its file's header line, "
        "which only a csv decoder reads; the channel's decoders (telegraf, kepware, neuron, thingsboard, json, "
        "influx, value) have none, so every line would be a dead letter. Set decoders = csv (or name a "
        "[decoder:NAME] of type = csv)",)
    assert loads(base + "decoders = csv\n").warnings == ()
    assert loads(base + "decoders = eu, json\n[decoder:eu]\ntype = csv\ndelimiter = ;\n").warnings == ()
    assert loads(base.replace("topic = plant/{stem}", "topic = p/n/g/{stem}/data.csv").replace(
        "strategy = topic", "strategy = wan")).warnings == ()
    assert loads(base.replace("header = true\n", "")).warnings == ()


def test_status_needs_only_the_lorrygate_section(tmp_path, monkeypatch):
    """status and flush read [lorrygate] alone: a broker password from an unset variable does not stop them."""
    from lorrygate.config.loader import load_gateway

    monkeypatch.delenv("LORRYGATE_UNSET_SECRET", raising=False)
    (tmp_path / "gw.ini").write_text("[lorrygate]\ndata_dir = /srv/lg\n" + GOOD.replace(
        "host = localhost", "host = localhost\nusername = u\npassword = ${ENV:LORRYGATE_UNSET_SECRET}"))
    assert load_gateway(str(tmp_path / "gw.ini")).control_endpoint == "unix:/srv/lg/lorrygate.sock"
    with pytest.raises(ConfigError):
        load(str(tmp_path / "gw.ini"))


@pytest.mark.parametrize("text, expected", [
    ("9481", ("127.0.0.1", 9481)),
    ("0.0.0.0:9481", ("0.0.0.0", 9481)),
    ("[::1]:9481", ("::1", 9481)),
    ("metrics.example:9481", ("metrics.example", 9481)),
    ("off", None),
])
def test_metrics_address(text, expected):
    settings = loads(GOOD.replace("[broker:local]", f"[lorrygate]\nmetrics = {text}\n\n[broker:local]"))
    assert settings.gateway.metrics == expected


def test_a_bad_metrics_address_is_named():
    found = problems(GOOD.replace("[broker:local]", "[lorrygate]\nmetrics = localhost:99999x\n\n[broker:local]"))
    assert any("[lorrygate] metrics: expected off, PORT, HOST:PORT or [IPv6]:PORT" in p for p in found), found


def test_relative_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "codecs").mkdir(parents=True)
    (site / "strategies").mkdir()
    (site / "codecs" / "c.js").write_text("function decodeUplink(input) { return {data: {}}; }")
    (site / "table.sql").write_text("CREATE TABLE IF NOT EXISTS {table} (time TEXT)")
    (site / "gateway.ini").write_text(textwrap.dedent("""
        [lorrygate]
        data_dir = state
        strategies = strategies
        control = unix:run/ctl.sock

        [broker:local]
        host = localhost

        [storage:db]
        url = sqlite:///data/x.sqlite
        ddl = @table.sql
        hooks = announce

        [hook:announce]
        type = command
        command = bin/announce {table}

        [decoder:c]
        type = javascript
        file = codecs/c.js

        [channel:main]
        topics = a/#
        """))
    monkeypatch.chdir(tmp_path)
    settings = load("site/gateway.ini")
    assert settings.gateway.data_dir == str(site / "state")
    assert settings.gateway.strategies == str(site / "strategies")
    assert settings.gateway.control_endpoint == f"unix:{site}/run/ctl.sock"
    assert settings.storages["db"].path == str(site / "data" / "x.sqlite")
    assert settings.storages["db"].url.target == f"sqlite:///{site}/data/x.sqlite"
    assert settings.hooks["announce"].command == f"{site}/bin/announce '{{table}}'"
    # Without a file, relative to the working directory, as given.
    text = loads(GOOD.replace("[broker:local]", "[lorrygate]\ndata_dir = here\n\n[broker:local]"))
    assert text.gateway.data_dir == str(tmp_path / "here")


def test_a_source_section_names_its_mistakes():
    found = problems(GOOD.replace("[broker:local]", "[source:w]\ntype = poll\nroot = /x\n\n[broker:local]"))
    assert any("[source:w] root: expected no root for a poll source" in p for p in found), found
    found = problems(GOOD.replace("[broker:local]", "[source:w]\ntype = poll\n\n[broker:local]"))
    assert any("[source:w] url: expected either a url or a command (one of them), got neither" in p for p in found)


def test_a_storage_named_twice_in_a_channels_tee_is_a_problem():
    """``storage = db, db`` wrote every row twice into one storage: a configuration problem."""
    assert problems("[broker:b]\nhost = h\n[storage:db]\nurl = sqlite:///x.db\n"
                    "[channel:c]\ntopics = a/#\nstorage = db, db\n") == [
        "gateway.ini [channel:c] storage: expected names separated by commas, each once ('db' more than once), "
        "got 'db, db'"]


def test_channels_that_store_the_same_messages_twice_are_warned_of():
    """A channel section copied and its topics not changed: both channels get each message of a/# from the broker
    and store it into the same tables. Allowed (an error would stop a running fleet's reload), but said by check
    and at the start. An ignore filter that covers the overlap, another strategy, another storage or a shared
    gateway group make no warning."""
    text = GOOD + textwrap.dedent("""
        [channel:copy]
        topics = mqttkit-1/+/gw/#, other/#
        storage = db
        [channel:split]
        topics = sites/#
        ignore = sites/attic/#
        [channel:attic]
        topics = sites/attic/#
        [channel:lan]
        topics = mqttkit-1/#
        strategy = lan
        [channel:g1]
        topics = fleet/#
        group = fleet
        [channel:g2]
        topics = fleet/#
        group = fleet
        [channel:s1]
        topics = $share/north/plant/#
        [channel:s2]
        topics = $share/north/plant/#
        """)
    settings = loads(text, source="gateway.ini")
    assert settings.warnings == (
        "gateway.ini [channel:main] and [channel:copy]: both subscribe 'mqttkit-1/+/gw/#' on broker local "
        "('mqttkit-1/#', 'mqttkit-1/+/gw/#') and store into db with the strategy wan: each such message is stored "
        "twice. Give one of them other topics, or an ignore filter",)
    assert loads(GOOD).warnings == ()


def test_a_column_budget_beyond_the_databases_limit_is_warned_of():
    """max_columns is held to what a table can have: a budget above it says so (SQLite as built, PostgreSQL)."""
    import sqlite3

    limit = sqlite3.connect(":memory:").getlimit(sqlite3.SQLITE_LIMIT_COLUMN)
    (warning,) = loads(GOOD.replace("[storage:db]\n", "[storage:db]\nmax_columns = 5000\n")).warnings
    assert f"[storage:db] max_columns: 5000 is more columns than a SQLite table can have ({limit})" in warning
    (warning,) = loads(GOOD.replace("url = sqlite:///var/test.sqlite", "url = postgresql://u@h/d\nmax_columns = 1601")
                       ).warnings
    assert "1601 is more columns than a PostgreSQL table can have (1600)" in warning and "extra_fields" in warning
    assert loads(GOOD.replace("[storage:db]\n", f"[storage:db]\nmax_columns = {limit}\n")).warnings == ()


def test_check_prints_the_warnings(tmp_path, capsys):
    from lorrygate.cli import main

    path = tmp_path / "gateway.ini"
    path.write_text(GOOD + "\n[channel:copy]\ntopics = mqttkit-1/#\n")
    assert main(["check", "-c", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().endswith("OK, 2 channel(s), 1 warning(s)")
    assert "warning: " in captured.err and "[channel:main] and [channel:copy]" in captured.err


def test_amqp_channels_with_queues_of_their_own_on_one_exchange_are_warned_of_too():
    """Each queue bound to the exchange gets its own copy of a message; one queue shared is taken in turns."""
    text = textwrap.dedent("""
        [broker:rabbit]
        type = amqp
        host = localhost
        [storage:db]
        url = sqlite:///var/test.sqlite
        [channel:a]
        topics = mqttkit-1/#
        [channel:b]
        topics = mqttkit-1/+/gw/#
        [channel:c]
        topics = mqttkit-1/#
        queue = shared
        [channel:d]
        topics = mqttkit-1/#
        queue = shared
        [channel:e]
        topics = mqttkit-1/#
        exchange = other
        queue = e
        """)
    import re

    warnings = loads(text, source="gateway.ini").warnings
    pairs = [re.match(r"gateway.ini \[channel:(\w)\] and \[channel:(\w)\]", w).groups() for w in warnings]
    assert pairs == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]


def test_a_channel_of_a_local_source_takes_all_of_it_and_is_warned_when_its_strategy_refuses_the_topics():
    """A channel of a [source:NAME] needs no topics (it takes every message of its source: the config said "topics
    is required"); one of a broker does. A files source's default topic (<source>/{stem}) under the default strategy,
    wan, made every line a dead letter: `check` warns and says what to set."""
    base = textwrap.dedent("""
        [storage:db]
        url = sqlite:///var/test.sqlite
        [source:logs]
        type = files
        path = /var/log/sensors/*.csv
        [channel:c]
        """)
    settings = loads(base, source="gateway.ini")
    (channel,) = settings.channels
    assert channel.topics == ("#",)
    assert settings.warnings == (
        "gateway.ini [channel:c]: the strategy wan refuses the topics of source logs (logs/{stem}: expected "
        "realm/network/gateway/node/<suffix> (at least 5 levels), got 2 level(s); a tree of another shape needs a "
        "strategy of its own (strategy = topic takes any)), so every message of it is a dead letter. Set "
        "[source:logs] topic to one it takes, or the channel's strategy",)
    assert loads(base + "strategy = topic\n").warnings == ()
    fitting = base.replace("path = ", "topic = mqttkit-1/net/{dir}/{stem}/data.json\npath = ")
    assert loads(fitting).warnings == ()
    assert loads(base.replace("path = ", "topic = a/{path}\npath = ")).warnings == ()  # levels unknown
    assert problems("[broker:b]\nhost = h\n[storage:db]\nurl = sqlite:///x\n[channel:c]\n") == [
        "gateway.ini [channel:c] topics: expected a value (required for a channel of a broker: the filters to "
        "subscribe to, such as mqttkit-1/#), got nothing"]


@pytest.mark.parametrize("host, expected", [
    ("localhost:1883", "expected a host name or address without a port (host = localhost, port = 1883)"),
    ("10.0.0.7:8883", "expected a host name or address without a port (host = 10.0.0.7, port = 8883)"),
    ("[::1]:1883", "expected a host name or address without a port (host = ::1, port = 1883)"),
    ("mqtt://broker.example.com", "expected a host name or address, not a URL"),
])
def test_a_broker_host_with_a_port_or_a_scheme_is_named(host, expected):
    """``host = localhost:1883`` passed the check and the gateway then retried a host name no resolver knows,
    for good; it is a config problem now. IPv6 addresses keep their colons."""
    (found,) = problems(GOOD.replace("host = localhost", f"host = {host}"))
    assert found.startswith("gateway.ini [broker:local] host: " + expected), found
    assert loads(GOOD.replace("host = localhost", "host = 2001:db8::7")).brokers["local"].host == "2001:db8::7"
    (found,) = problems(GOOD.replace("host = localhost", "host = mqtt://gw:hunter2@broker.example.com"))
    assert "hunter2" not in found and "'mqtt://gw:***@broker.example.com'" in found, found


@pytest.mark.parametrize("url", ["sqlite://var/x.sqlite", "sqlite:/var/x.sqlite", "sqlite:///"])
def test_a_sqlite_url_without_its_three_slashes_says_how_to_write_it(url):
    (found,) = problems(GOOD.replace("url = sqlite:///var/test.sqlite", f"url = {url}"))
    assert "expected sqlite:/// and the file's path: three slashes before a relative path" in found, found


@pytest.mark.parametrize("url, expected", [
    ("crate://db:4200/?shards=3", "a crate:// URL without ?options (they are keys of the section"),
    ("crate://db:4200/doc", "a crate:// URL without a path (the table's schema and name come from the topology), "
                            "not '/doc'"),
    ("sqlite:///var/gw.sqlite?mode=ro", "sqlite:/// and the file's path alone, without ?options or a #"),
    ("postgresql://gw@db/x?sslmode=requre", "sslmode = disable, allow, prefer, require, verify-ca, verify-full in "
                                            "the postgresql:// URL, not 'requre'"),
    ("postgresql://gw@db/x?schema=a", 'a PostgreSQL URL that libpq takes (invalid URI query parameter: "schema"'),
    ("mqtt://broker:1883/?qos=2", "a mqtt:// URL with the options client-id and protocol only"),
    ("mqtt://broker:1883/?protocol=3", "protocol = 3.1.1 or 5 in the mqtt:// URL, not '3'"),
    ("mqtt://broker:1883/copy/{topic}", "a mqtt:// URL without a path (the topic is the key topic = ...)"),
    ("kafka://k1:9092/?acks=all", "a kafka:// URL without ?options"),
    ("pushgateway://pg:9091/job?grouping=a", "a pushgateway:// URL without ?options"),
], ids=["crate-option", "crate-path", "sqlite-option", "sslmode", "libpq-option", "mqtt-option", "mqtt-protocol",
        "mqtt-path", "kafka-option", "pushgateway-option"])
def test_a_storage_url_part_its_storage_would_not_read_is_a_problem(url, expected):
    """An option or a path of a storage URL that its storage does not read was left unread in silence:
    crate://db:4200/?shards=3 made tables of one shard, ?mode=ro a SQLite file of that name, a misspelt
    sslmode failed only at the first connection."""
    (found,) = problems(GOOD.replace("url = sqlite:///var/test.sqlite", f"url = {url}"))
    assert found.startswith(f"gateway.ini [storage:db] url: expected {expected}"), found


@pytest.mark.parametrize("url", ["postgresql:///lorrygate", "postgresql://gw@/lorrygate?host=/var/run/postgresql",
                                 "postgresql://gw@db/x?sslmode=verify-full&application_name=gw",
                                 "mqtt://broker:1883/?protocol=5&client-id=gw-1", "crate://db1,db2:4201/",
                                 "ws://127.0.0.1:9482/live", "pushgateway://pg:9091/lorrygate"])
def test_storage_urls_with_what_their_storage_reads_are_taken(url):
    """A PostgreSQL URL without a host is libpq's local Unix socket (it was refused); the options and paths
    that their storages read are taken."""
    settings = loads(GOOD.replace("url = sqlite:///var/test.sqlite", f"url = {url}"))
    assert settings.storages["db"].url.raw == url


@pytest.mark.parametrize("url", ["postgresql://gw:hunter2@db:notaport/x", "crate://gw:hunter2@:4200/",
                                 "mqtt://gw:hunter2@", "postgresql://gw:hunter2%zz@db/x",
                                 "postgresql://gw@db/x?password=hunter2%zz"])
def test_a_storage_url_that_is_refused_is_shown_without_its_password(url):
    """The config problem quoted the URL as written, password and all, into the terminal and the log; libpq's
    message about a bad percent-encoding quotes the password too."""
    (found,) = problems(GOOD.replace("url = sqlite:///var/test.sqlite", f"url = {url}"))
    assert "hunter2" not in found and ("gw:***@" in found or "password=***" in found), found


def test_the_influx_decoder_without_its_package_is_a_config_problem_and_leaves_the_topic_chain(monkeypatch):
    """line-protocol-parser is an extra (a C extension without wheels for 32-bit ARM): a channel that names the
    influx decoder says how to install it; the topic strategy's own chain goes without it."""
    from lorrygate.config import settings

    real = settings.installed
    monkeypatch.setattr(settings, "installed", lambda module: module != "line_protocol_parser" and real(module))
    (found,) = problems(GOOD.replace("storage = db", "storage = db\ndecoders = json, influx"))
    assert "the influx decoder needs the line-protocol-parser package: pip install 'lorrygate[influx]'" in found
    channel = loads(GOOD.replace("storage = db", "storage = db\nstrategy = topic")).channels[0]
    assert channel.decoders == ("telegraf", "kepware", "neuron", "thingsboard", "json", "value")
    monkeypatch.setattr(settings, "installed", real)
    assert loads(GOOD.replace("storage = db", "storage = db\nstrategy = topic")).channels[0].decoders == (
        "telegraf", "kepware", "neuron", "thingsboard", "json", "influx", "value")


def test_the_sparkplug_strategy_without_protobuf_is_a_config_problem_that_says_how_to_install_it(monkeypatch):
    from lorrygate.config import settings

    real = settings.installed
    assert real("google.protobuf") and not real("google.no_such_module") and not real("nosuchparent.module")
    monkeypatch.setattr(settings, "installed", lambda module: module != "google.protobuf" and real(module))
    (found,) = problems(GOOD.replace("storage = db", "storage = db\nstrategy = sparkplug"))
    assert "the sparkplug decoder needs the protobuf package: pip install 'lorrygate[sparkplug]'" in found


def test_rebirth_is_an_option_of_sparkplug_decoders_only():
    config = GOOD + "\n[decoder:spb]\ntype = sparkplug\nrebirth = yes\n"
    decoder = loads(config.replace("storage = db", "storage = db\nstrategy = sparkplug\ndecoders = spb, json")
                    ).decoders["spb"](None, None)
    assert (decoder.name, decoder.rebirth) == ("spb", True)
    (found,) = problems(GOOD + "\n[decoder:c]\ntype = csv\nrebirth = yes\n")
    assert "no rebirth for type csv (it takes: columns, delimiter)" in found


def test_a_listening_source_serves_one_channel_and_an_http_source_listens():
    """Two channels of one socket or HTTP source each listened on its path or port: the second failed at start."""
    base = "[storage:s]\nurl=sqlite:///x\n[source:web]\ntype = http\n{extra}[channel:a]\nsource=web\nstorage=s\n"
    (found,) = problems(base.format(extra="") + "[channel:b]\nsource=web\nstorage=s\n")
    assert "[channel:b] source: expected a source no other channel reads (a http source listens for one channel; " \
           "'a' reads 'web')" in found
    (found,) = problems(base.format(extra="listen = off\n"))  # (not also "topics: required for a broker")
    assert "[source:web] listen: expected PORT, HOST:PORT or [IPv6]:PORT, where it listens, got 'off'" in found
    assert loads(base.format(extra="listen = 0.0.0.0:8080\n")).sources["web"].listen == ("0.0.0.0", 8080)


def test_an_http_requests_topic_is_its_path_with_kotoris_suffix_by_content_type():
    from lorrygate.sources.http import form_as_json, topic_of

    assert topic_of(b"/api/mqttkit-1/testdrive/area-42/node-1/data", "application/json") == \
        "mqttkit-1/testdrive/area-42/node-1/data.json"
    assert topic_of(b"/api/r/n/g/node/event", "text/csv") == "r/n/g/node/event.csv"
    assert topic_of(b"/api/luftdaten/testdrive/area-42/node-1/custom/airrohr", "application/json") == \
        "luftdaten/testdrive/area-42/node-1/custom/airrohr.json"
    assert topic_of(b"/api/r/n/g/node/data/", "text/plain") == "r/n/g/node/data"
    assert topic_of(b"/api/home/kitchen%20sensor/state", "application/json") == "home/kitchen sensor/state"
    assert form_as_json(b"temperature=21.5&humidity=48&temperature=22") == b'{"temperature": "22", "humidity": "48"}'
    # curl -d '{...}' without -H sends JSON as a form's type
    assert form_as_json(b' {"temperature": 21.5}') == b' {"temperature": 21.5}'
    # bytes that are not UTF-8, percent-escaped or sent as they are: \xNN, as a header's (U+FFFD stood for any)
    assert json.loads(form_as_json(b"hum=%FF&name=K%C3%BCche&raw=\xe4x&%FEk=a+b")) == {
        "hum": "\\xff", "name": "K\u00fcche", "raw": "\\xe4x", "\\xfek": "a b"}


@pytest.mark.parametrize("strategy, taken", [("", True), ("strategy = lan\n", True), ("strategy = sites\n", False)])
def test_a_fine_offset_form_goes_to_ecowitt_json_only_where_the_strategy_stores_it_with_the_data(strategy, taken):
    """The HTTP source moves a form with PASSKEY from .../data.json to .../ecowitt.json where the channel's
    strategy stores both in one table (wan, lan); a declarative strategy that knows only data.json keeps it."""
    from twisted.internet.task import Clock

    from lorrygate.service.channel_service import ChannelService
    from lorrygate.sources.http import fine_offset_topic, form_as_json
    from lorrygate.storage.batcher import Batcher
    from lorrygate.storage.memory import MemoryStorage

    settings = loads("[storage:s]\nurl=sqlite:///x\n[source:web]\ntype = http\n"
                     "[strategy:sites]\ntopic = {realm}/{site}/{node}/{kind:data|event}.json\n"
                     "schema = {realm}_{site}\ntable = {node}_{suffix}\n"
                     f"[channel:a]\nsource=web\nstorage=s\n{strategy}")
    clock = Clock()
    service = ChannelService.from_settings(settings, settings.channels[0], {"s": Batcher(MemoryStorage(), clock)},
                                           clock)
    topic = "r/s/n/data.json" if "sites" in strategy else ("r/n/data.json" if "lan" in strategy else "r/n/g/d/data.json")
    station = form_as_json(b"PASSKEY=6BB1&stationtype=GW1000&tempf=48.4")
    moved = fine_offset_topic(topic, station, service.source.table_of)
    assert moved == (topic.replace("data.json", "ecowitt.json") if taken else topic)
    assert fine_offset_topic(topic, form_as_json(b"tempf=48.4"), service.source.table_of) == topic


def test_https_needs_both_the_certificate_and_its_key():
    base = "[storage:s]\nurl=sqlite:///x\n[source:web]\ntype = http\n{extra}[channel:a]\nsource=web\nstorage=s\n"
    found = problems(base.format(extra="tls_cert = /etc/hostname\n"))[0]
    assert "[source:web] tls_key: expected a PEM file (HTTPS needs tls_cert and tls_key), got nothing" in found
    found = problems(base.format(extra="tls_cert = /nonexistent.pem\ntls_key = /etc/hostname\n"))[0]
    assert "[source:web] tls_cert: expected a readable PEM file, got '/nonexistent.pem'" in found


@pytest.mark.parametrize("kind, base, expected", [
    ("opendtu", "solar/#", "none empty and no # (a + level matches any: solar/+)"),
    ("opendtu", "solar//garage", "none empty and no # (a + level matches any: solar/+)"),
    ("opendtu", "/", "none empty and no # (a + level matches any: solar/+)"),
    ("ahoy", "inverter/#", "none empty and no # (a + level matches any: solar/+)"),
    ("zigbee2mqtt", "z2m/+", "none empty and no wildcard (+, #)"),
    ("openmqttgateway", "home/#", "none empty and no wildcard (+, #)"),
])
def test_a_strategys_base_topic_with_an_empty_level_or_a_wildcard_is_a_config_problem(kind, base, expected):
    """Such a base matched no topic: every message of the channel was a dead letter."""
    (found,) = problems(GOOD + f"\n[strategy:s]\ntype = {kind}\nbase = {base}\n")
    assert f"[strategy:s] base: expected topic levels, {expected}, got {base!r}" in found


@pytest.mark.parametrize("kind, base, topic", [
    ("opendtu", "solar/", "solar/dtu/status"),  # OpenDTU shows its base topic so
    ("zigbee2mqtt", "z2m/", "z2m/lamp"),
    ("ahoy", "ahoy/+/", "ahoy/garage/HM-600/ch0/P_AC"),
    ("opendtu", "/home/solar", "/home/solar/dtu/status"),  # a topic may begin with an empty level
])
def test_a_base_topic_ending_in_a_slash_is_the_same_base(kind, base, topic):
    strategy = loads(GOOD + f"\n[strategy:s]\ntype = {kind}\nbase = {base}\n").strategies["s"]()
    assert strategy.match(topic).kind in ("data", "event")


@pytest.mark.parametrize("kind, key, value, expected", [
    ("zmq", "max_payload", "64kB", None),
    ("mqtt", "max_payload", "64kB", None),
    ("amqp", "max_payload", "64kB", None),
    ("redis", "max_payload", "64kB", "max_payload: expected no max_payload for a broker of type redis (it is for "
                                     "mqtt, amqp and zmq), got 64000"),
    ("redis", "client_id", "me", "client_id: expected no client_id for a broker of type redis (it is for mqtt), "
                                 "got 'me'"),
    # keys a type did not read, taken without a word: a zmq broker's tls = true and password went in plain text,
    # and a kafka broker's keepalive did nothing
    ("zmq", "tls", "true", "tls: expected no tls for a broker of type zmq (it is for mqtt, amqp, redis and kafka; "
                           "lorrygate's ZeroMQ source neither authenticates nor encrypts (no CURVE)"),
    ("zmq", "password", "${ENV:HOME}", "password: expected no password for a broker of type zmq (it is for mqtt, "
                                       "amqp, redis and kafka; lorrygate's ZeroMQ source neither authenticates"),
    ("zmq", "username", "gw", "username: expected no username for a broker of type zmq"),
    ("zmq", "tls_cert", "/etc/hostname", "tls_cert: expected no tls_cert for a broker of type zmq"),
    ("kafka", "keepalive", "10", "keepalive: expected no keepalive for a broker of type kafka (it is for mqtt, amqp, "
                                 "redis and zmq), got 10"),
])
def test_a_broker_key_of_another_type_is_a_problem(kind, key, value, expected):
    """A key one type of broker takes, given to another: the problem names the types it is for."""
    text = GOOD.replace("host = localhost", f"type = {kind}\nhost = localhost\nport = 5556\n{key} = {value}")
    if expected is None:
        assert loads(textwrap.dedent(text)).brokers["local"].max_payload == 64000
        return
    assert any(expected in problem for problem in problems(text)), problems(text)


@pytest.mark.parametrize("url, shown", [
    ("https://api.openweathermap.org/data/2.5/weather?q=Berlin&appid=0a1b2c", "https://api.openweathermap.org/data/"
                                                                              "2.5/weather?q=Berlin&appid=***"),
    ("https://gw:s3cret@meter.example/api?api_key=0a1b&units=metric", "https://gw:***@meter.example/api?api_key=***"
                                                                      "&units=metric"),
    ("https://station.example/current.json?station=7", "https://station.example/current.json?station=7"),
], ids=["appid", "user-info-and-api-key", "nothing-secret"])
def test_a_polled_url_is_shown_without_its_password_token_or_api_key(url, shown):
    """Weather and meter APIs take their key in the query (appid=, api_key=): the poll's log lines and its status
    show the URL with it masked, as storage URLs show their passwords."""
    from twisted.internet.task import Clock

    from lorrygate.config.settings import SourceSettings
    from lorrygate.config.values import mask_url
    from lorrygate.sources.periodic import PeriodicSource

    assert mask_url(url) == shown
    source = PeriodicSource("weather", SourceSettings(name="w", type="poll", url=url), lambda m: None, Clock())
    assert (source.broker.host, source.client_id) == (shown, shown)


def test_a_secret_written_in_the_file_itself_is_a_warning(tmp_path, monkeypatch):
    """The sample config says secrets never go into the file, but a password, a token or a database URL with its
    password written there passed `lorrygate check` in silence."""
    monkeypatch.setenv("MQTT_PASSWORD", "from-the-environment")
    (tmp_path / "pg-url").write_text("postgresql://gw:from-a-file@db/telemetry\n")
    written = GOOD.replace("host = localhost", "host = localhost\nusername = gw\npassword = hunter2") + (
        "\n[storage:pg]\nurl = postgresql://gw:s3cret@db/telemetry\n")
    warnings = loads(written, source="gateway.ini").warnings
    assert warnings == (
        "gateway.ini [broker:local] password: a secret written in the file itself (whoever reads the file, or a "
        "copy of it shared for help, reads it): give it as ${ENV:NAME} or ${FILE:path}",
        "gateway.ini [storage:pg] url: a secret written in the file itself (whoever reads the file, or a copy of it "
        "shared for help, reads it): give it as ${ENV:NAME} or ${FILE:path}, the whole URL or its password")
    assert not any("hunter2" in w or "s3cret" in w for w in warnings)
    referenced = GOOD.replace("host = localhost", "host = localhost\nusername = gw\npassword = ${ENV:MQTT_PASSWORD}") + (
        f"\n[storage:pg]\nurl = ${{FILE:{tmp_path / 'pg-url'}}}\n[storage:other]\nurl = postgresql://gw@db/x\n")
    assert loads(referenced, source="gateway.ini").warnings == ()


def test_a_channel_with_an_invalid_value_still_has_its_names_checked():
    """``qos = 7`` beside ``storage = db, nope``: the channel was passed over for its bad value, so ``lorrygate
    check`` told the storage's typo only once the qos was mended, in a second run. Every problem comes at once; a
    name whose own value is invalid adds none."""
    found = problems(GOOD.replace("storage = db\n", "storage = db, nope\nqos = 7\nstrategy = nosuch\n"
                                  "decoders = json, nodec\nsource = lcoal\n").replace("source = local\n", ""))
    assert [p.split(": expected")[0] for p in found] == ["gateway.ini [channel:main] qos", "gateway.ini [channel:main] source",
                                                 "gateway.ini [channel:main] storage",
                                                 "gateway.ini [channel:main] strategy",
                                                 "gateway.ini [channel:main] decoders"], found
    assert "got 'lcoal' (did you mean 'local'?)" in found[1] and "got 'nope'" in found[2]
    assert "got 'nosuch'" in found[3] and "got 'nodec'" in found[4]
    qos, storage = problems(GOOD.replace("storage = db\n", "storage = db, db\nqos = 7\nstrategy = \n"))
    assert "qos" in qos and "each once ('db' more than once)" in storage  # (and nothing of the names)


@pytest.mark.parametrize("key, value, expected", [
    ("qos", "2", "qos: expected no qos for a channel of a poll source (it is for the channels of mqtt brokers), "
                 "got '2'"),
    ("group", "gateways", "group: expected no group for a channel of a poll source (it is for the channels of mqtt, "
                          "redis, kafka brokers)"),
    ("error_topic", "true", "error_topic: expected no error_topic = true for a channel of a poll source (error reports "
                            "are published to the brokers of mqtt, amqp and redis channels; a bad message is kept as "
                            "a dead letter in any case"),
])
def test_a_channel_key_its_source_does_not_read_is_a_problem(key, value, expected):
    """A channel of a [source:NAME] took the keys of broker channels without a word (a poll source's qos = 2, a
    files source's group), and error_topic = true where no report can be published."""
    text = GOOD.replace("[channel:main]\nsource = local\ntopics = mqttkit-1/#\n",
                        "[source:api]\ntype = poll\nurl = http://meter.example/now\ntopic = mqttkit-1/a/b/c\n\n"
                        f"[channel:main]\nsource = api\n{key} = {value}\n")
    assert any(expected in problem for problem in problems(text)), problems(text)
    assert loads(text.replace(f"{key} = {value}\n", "")).channels[0].source == "api"


@pytest.mark.parametrize("kind, accepted", [("mqtt", True), ("amqp", True), ("redis", True), ("zmq", False),
                                            ("kafka", False)])
def test_error_topic_true_needs_a_broker_that_reports_can_be_published_to(kind, accepted):
    """A zmq or kafka channel's error_topic = true published nothing, and said nothing of it."""
    pytest.importorskip({"amqp": "pika", "redis": "redis", "zmq": "zmq", "kafka": "confluent_kafka"}.get(kind, "attrs"))
    text = GOOD.replace("host = localhost", f"type = {kind}\nhost = localhost\nport = 5556").replace(
        "storage = db\n", "storage = db\nerror_topic = true\n")
    if accepted:
        assert loads(textwrap.dedent(text)).channels[0].error_topic is True
        return
    assert any(f"error_topic: expected no error_topic = true for a channel of a {kind} broker" in problem
               for problem in problems(text)), problems(text)
    assert loads(textwrap.dedent(text.replace("error_topic = true", "error_topic = false"))).channels[0].error_topic \
        is False


def test_a_password_in_plain_text_beyond_loopback_is_warned_of():
    """A broker's password without tls, and a crate://, mqtt:// or kafka:// URL's, went in clear to another
    machine, and nothing said so; to loopback, or over TLS, nothing is said."""
    broker = GOOD.replace("host = localhost", "host = {host}\nusername = gw\npassword = ${{ENV:HOME}}\n{tls}")
    assert loads(broker.format(host="broker.example", tls=""), source="gw.ini").warnings == (
        "gw.ini [broker:local] password: it goes in plain text to broker.example (tls = false), where anyone on "
        "the way reads it; set tls = true and the broker's TLS port (in a URL: mqtts://, amqps://, rediss://, "
        "kafkas://)",)
    assert loads(broker.format(host="broker.example", tls="tls = true\n")).warnings == ()
    assert loads(broker.format(host="127.0.0.1", tls="")).warnings == ()
    sink = GOOD.replace("storage = db\n", "storage = db, out\n") + "\n[storage:out]\nurl = {url}\n"
    assert loads(sink.format(url="crate://admin:${ENV:HOME}@crate.example:4200/"), source="gw.ini").warnings == (
        "gw.ini [storage:out] url: its password goes in plain text to crate.example, where anyone on the way reads "
        "it; use crate+https://",)
    assert loads(sink.format(url="crate+https://admin:${ENV:HOME}@crate.example:4200/")).warnings == ()
    assert loads(sink.format(url="crate://crate.example:4200/")).warnings == ()
