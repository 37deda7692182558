"""Storage sections: URLs, per-kind keys, DDL templates checked at start-up."""

import textwrap

import pytest

from lorrygate.config import loads
from lorrygate.errors import ConfigError

BASE = """
[broker:b]
host = localhost

[storage:s]
{storage}

[channel:c]
topics = #
"""


def load(storage):
    return loads(textwrap.dedent(BASE.format(storage=textwrap.dedent(storage).strip())), source="gw.ini")


def problems(storage):
    with pytest.raises(ConfigError) as info:
        load(storage)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("url, kind", [
    ("sqlite:///var/x.sqlite", "sqlite"),
    ("postgresql://lorry:secret@db.example:5432/telemetry", "postgresql"),
    ("crate://localhost:4200/", "crate"),
    ("crate+https://admin:secret@crate.example:4200/", "crate"),
], ids=["sqlite", "postgresql", "crate", "crate-https"])
def test_urls(url, kind):
    """Each supported URL gives its storage kind; str() of the URL hides the password."""
    storage = load(f"url = {url}").storages["s"]
    assert storage.kind == kind
    assert "secret" not in str(storage.url) and "secret" not in repr(storage)


def test_crate_options():
    """CrateDB takes shards, replicas and a partition period."""
    storage = load("url = crate://localhost:4200/\nshards = 2\nreplicas = 0-1\npartition = day").storages["s"]
    assert (storage.shards, storage.replicas, storage.partition) == (2, "0-1", "day")


@pytest.mark.parametrize("storage, expected", [
    ("url = crate://localhost:4200/\nsynchronous = OFF", "synchronous: expected no synchronous for a crate storage"),
    ("url = sqlite:///x.sqlite\nshards = 3", "shards: expected no shards for a sqlite storage"),
    ("url = mysql://x/y", "url: expected a storage URL"),
    ("url = crate://localhost:4200/\nddl = CREATE TABLE {qualified} (a INT) CLUSTERD INTO 3 SHARDS",
     "ddl: expected a DDL template, got one that fails: CrateDB would refuse"),
    ("url = crate://localhost:4200/\nddl = CREATE TABLE {nowhere} (a INT)", "unknown placeholder {nowhere}"),
    ("url = crate://localhost:4200/\nddl = @/nonexistent.sql", "ddl: expected a readable DDL file at /nonexistent.sql"),
    ("url = sqlite:///x.sqlite\nmerge = 10s\nlayout = per-network",
     "merge: expected per-address tables (layout = per-address): rows are merged in a table of their address, got "
     "layout = per-network"),
    ("url = sqlite:///x.sqlite\nmerge = ten seconds", "merge: expected a duration such as 250ms"),
    ("url = sqlite:///x.sqlite\nmerge = 2d", "merge: expected a duration from 0 s to 86400 s"),
    ("url = mqtt://localhost:1883/\nmerge = 10s", "merge: expected no merge for a mqtt storage"),
    # a sink has no tables: its ddl and idempotent were taken and did nothing
    ("url = kafka://localhost:9092/\nddl = CREATE TABLE {table} (a INT)", "ddl: expected no ddl for a kafka storage"),
    ("url = ws://127.0.0.1:9482/\nidempotent = true", "idempotent: expected no idempotent for a websocket storage "
                                                     "(it is for sqlite, postgresql, crate)"),
], ids=["sqlite-key-on-crate", "crate-key-on-sqlite", "bad-url", "bad-crate-ddl", "bad-placeholder", "missing-file",
        "merge-per-network", "merge-not-a-duration", "merge-beyond-a-day", "merge-on-mqtt", "ddl-on-kafka",
        "idempotent-on-websocket"])
def test_storage_problems(storage, expected):
    """Each storage mistake names its key and the problem (with CrateDB's parser message for DDL)."""
    found = problems(storage)
    assert any(expected in problem for problem in found), found


@pytest.mark.parametrize("url", ["sqlite:///x.sqlite", "postgresql://u@db/t", "crate://localhost:4200/"])
def test_merge_takes_a_bucket_on_sql_storages(url):
    """``merge`` is a duration (the bucket's length) on SQLite, PostgreSQL and CrateDB; 0, the default, is off."""
    assert load(f"url = {url}\nmerge = 1m").storages["s"].merge == 60.0
    assert load(f"url = {url}").storages["s"].merge == 0.0


def test_crate_ddl_template_accepted():
    """The documented custom DDL passes CrateDB's grammar and is kept."""
    storage = load("""
        url = crate://localhost:4200/
        ddl = CREATE TABLE IF NOT EXISTS {qualified} ("time" TIMESTAMP WITH TIME ZONE NOT NULL, tags OBJECT(DYNAMIC), fields OBJECT(DYNAMIC), month TIMESTAMP WITH TIME ZONE GENERATED ALWAYS AS date_trunc('month', "time")) CLUSTERED INTO 3 SHARDS PARTITIONED BY (month) WITH (number_of_replicas = '0-1')
        """).storages["s"]
    assert storage.ddl is not None


def test_each_storage_is_handed_out_as_soon_as_its_section_is_read(tmp_path):
    """``load(on_storage=...)`` hands each valid storage over before the decoders and strategies are
    imported (``lorrygate run`` starts reading an SQLite database's schema then), and none that is invalid."""
    import subprocess
    import sys

    config = tmp_path / "gw.ini"
    config.write_text(textwrap.dedent("""
        [broker:b]
        host = localhost

        [storage:good]
        url = sqlite:///var/a.sqlite

        [storage:bad]
        url = nosuch://x

        [channel:c]
        topics = #
        storage = good
        """))
    script = (
        "import sys\n"
        "from lorrygate.config import load\n"
        "from lorrygate.errors import ConfigError\n"
        "seen = []\n"
        "def handed(storage):\n"
        "    seen.append((storage.name, 'lorrygate.decoding' in sys.modules, 'twisted.internet.defer' in sys.modules))\n"
        "try:\n"
        f"    load({str(config)!r}, on_storage=handed)\n"
        "except ConfigError:\n"
        "    pass\n"
        "print(seen)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[('good', False, False)]"


@pytest.mark.parametrize("storage, expected", [
    ("url = mqtt://h/\ntopic = out/{nodes}", "got 'out/{nodes}': KeyError: 'nodes'"),
    ("url = mqtt://h/\ntopic = out/{node.id}", "AttributeError: 'str' object has no attribute 'id'"),
    ("url = mqtt://h/\ntopic = out/{", "Single '{' encountered"),
    ("url = mqtt://h/\ntopic = out/{0}", "positional fields"),
    ("url = mqtt://h/\ntopic = out/+/{node}", "the topic holds '+' at character 4 (a wildcard)"),
    ("url = mqtt://h/\ndead_letter_topic = dead/#", "dead_letter_topic: expected an MQTT topic name to publish to"),
    ("url = kafka://h:9092/\ntopic = t-{table", "expected '}' before end of string"),
], ids=["unknown-placeholder", "attribute", "lone-brace", "positional", "wildcard", "dead-letter-wildcard", "kafka"])
def test_a_publishing_sinks_topic_template_is_checked(storage, expected):
    """A topic template that could never give a topic is a configuration problem: an unknown placeholder gave
    an empty level in silence, and ``{node.id}`` or a lone ``{`` failed every batch, so the sink stopped."""
    if "kafka" in storage:
        pytest.importorskip("confluent_kafka")
    found = problems(storage)
    assert any(expected in problem for problem in found), found


def test_a_publishing_sinks_topic_template_may_use_every_placeholder_and_a_format():
    storage = load("url = mqtt://h/\ntopic = {realm}/{network}/{gateway}/{node:>4}/{kind}/{rest}/{schema}/{table}/"
                   "{topic}").storages["s"]
    assert storage.topic.startswith("{realm}/")


LOOP = """
[broker:b]
host = localhost
port = 1884

[storage:out]
url = mqtt://127.0.0.1:1884/
{more}

[channel:c]
topics = sensors/#
storage = out
{ignore}
"""


@pytest.mark.parametrize("more, ignore, loops", [
    ("topic = {topic}/relayed", "", True),
    ("topic = {topic}/relayed", "ignore = sensors/+/relayed, sensors/+/+/relayed", True),  # (and deeper topics?)
    ("topic = sensors/relayed/{node}", "ignore = sensors/relayed/#", False),
    ("topic = {topic}/relayed", "ignore = +/+/+/relayed", True),
    ("topic = processed/{topic}", "", False),
], ids=["loops", "ignored-not-deep-enough", "ignored", "ignored-too-narrow", "elsewhere"])
def test_a_channel_whose_mqtt_storage_publishes_into_its_own_topics_is_a_problem(more, ignore, loops):
    """Each message the storage published came back through the channel's subscription, on the same broker, and
    was published again, without end; an ignore filter for what it publishes ends the loop."""
    text = textwrap.dedent(LOOP).replace("{more}", more).replace("{ignore}", ignore)
    if not loops:
        assert loads(text, source="gw.ini").channels
        return
    with pytest.raises(ConfigError) as info:
        loads(text, source="gw.ini")
    (problem,) = [str(p) for p in info.value.problems]
    assert "[channel:c] storage: expected storages that do not feed the channel its own messages" in problem
    assert "matches this channel's 'sensors/#'" in problem and "/relayed'" in problem


def test_mqtts_and_kafkas_sinks_take_the_ca_and_a_client_certificate(tmp_path):
    """A sink to a broker of a private CA, or one that requires client certificates, could not be configured:
    ``tls_ca`` was for CrateDB only. The files are checked before the reactor runs."""
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    files = f"tls_ca = {pem}\ntls_cert = {pem}\ntls_key = {pem}"
    mqtt = load(f"url = mqtts://broker:8883/\n{files}").storages["s"].broker
    assert (mqtt.tls, mqtt.tls_ca, mqtt.tls_cert, mqtt.tls_key) == (True, str(pem), str(pem), str(pem))
    pytest.importorskip("confluent_kafka")
    kafka = load(f"url = kafkas://k1:9093/\ntls_ca = {pem}").storages["s"].broker
    assert (kafka.tls, kafka.tls_ca) == (True, str(pem))
    assert problems(f"url = mqtt://broker/\ntls_ca = {pem}") == [
        "gw.ini [storage:s] tls_ca: expected mqtts:// in the URL (tls_ca is for TLS connections), got "
        "'mqtt://broker/'"]
    assert problems(f"url = mqtts://broker/\ntls_key = {pem}") == [
        "gw.ini [storage:s] tls_cert: expected the client certificate tls_key belongs to, got nothing"]
    assert problems(f"url = mqtts://broker/\ntls_ca = {tmp_path}/none.pem") == [
        f"gw.ini [storage:s] tls_ca: expected a readable PEM file, got '{tmp_path}/none.pem'"]
    assert problems(f"url = sqlite:///x.sqlite\ntls_cert = {pem}")[0].startswith(
        "gw.ini [storage:s] tls_cert: expected no tls_cert for a sqlite storage (it is for mqtt, kafka)")


CYCLE = """
[broker:local]
host = 127.0.0.1
port = 1884

[broker:other]
host = 10.0.0.9
port = 1883

[storage:archive]
url = mqtt://localhost:1884/
topic = archive/{topic}

[storage:back]
url = {back}
topic = {template}

[channel:a]
source = local
topics = plant/#
strategy = topic
storage = archive
{ignore}

[channel:b]
source = local
topics = archive/#
strategy = topic
storage = back
"""


@pytest.mark.parametrize("back, template, ignore, warned", [
    ("mqtt://127.0.0.1:1884/", "plant/copy/{node}", "", True),
    ("mqtt://127.0.0.1:1884/", "plant/copy/{node}", "ignore = plant/copy/#", False),
    ("mqtt://127.0.0.1:1884/", "plant2/copy/{node}", "", False),
    ("mqtt://10.0.0.9:1883/", "plant/copy/{node}", "", False),
], ids=["round", "ignored", "elsewhere", "another-broker"])
def test_channels_that_feed_each_other_round_are_warned_of(back, template, ignore, warned):
    """Channel a relays plant/# to archive/..., channel b archive/# back to plant/...: a message went round the two
    without end, a topic longer each time (a channel that feeds itself is an error; through another channel, a
    warning: the topics are sampled)."""
    text = textwrap.dedent(CYCLE).replace("{back}", back).replace("{template}", template).replace("{ignore}", ignore)
    warnings = [w for w in loads(text, source="gw.ini").warnings if "round these channels" in w]
    if not warned:
        assert warnings == []
        return
    (warning,) = warnings
    assert ("[channel:a] publishes through storage 'archive' such as 'archive/plant/x', which [channel:b] "
            "subscribes ('archive/#'); [channel:b] publishes through storage 'back'") in warning
    assert "which [channel:a] subscribes ('plant/#')" in warning


def test_a_ring_of_three_channels_is_one_warning_naming_each_hop():
    """a -> b -> c -> a: the shortest way round from each channel is the same ring, warned of once."""
    sections = ["[broker:local]\nhost = 127.0.0.1\nport = 1884\n"]
    for name, after in (("a", "b"), ("b", "c"), ("c", "a")):
        sections.append(f"[storage:to_{after}]\nurl = mqtt://127.0.0.1:1884/\ntopic = {after}/{{node}}\n")
        sections.append(f"[channel:{name}]\nsource = local\ntopics = {name}/#\nstrategy = topic\nstorage = to_{after}\n")
    (warning,) = [w for w in loads("\n".join(sections), source="gw.ini").warnings if "round these channels" in w]
    assert warning.count("publishes through storage") == 3
    for name, after in (("a", "b"), ("b", "c"), ("c", "a")):
        assert f"[channel:{name}] publishes through storage 'to_{after}'" in warning


def test_a_channels_merge_goes_to_its_sql_storages():
    """``merge`` of a channel section reaches the SQL storages it writes to (a tee's too), by channel name; a
    channel without it leaves the storage's."""
    settings = loads(textwrap.dedent("""
        [broker:b]
        host = localhost
        [storage:s]
        url = sqlite:///x.sqlite
        [storage:p]
        url = crate://localhost:4200/
        merge = 1m
        [channel:dtu]
        topics = solar/#
        storage = s, p
        merge = 10s
        [channel:rooms]
        topics = home/#
        storage = s
        [channel:off]
        topics = off/#
        storage = p
        merge = 0
        """), source="gw.ini")
    assert settings.storages["s"].channel_merge == (("dtu", 10.0),)
    assert settings.storages["p"].channel_merge == (("dtu", 10.0), ("off", 0.0))
    assert settings.storages["p"].merge == 60.0


@pytest.mark.parametrize("storage, expected", [
    ("url = sqlite:///x.sqlite\nlayout = per-network",
     "[channel:c] merge: expected per-address tables (layout = per-address in [storage:s]): rows are merged in a "
     "table of their address, got layout = per-network"),
    ("url = mqtt://localhost:1883/", "[channel:c] merge: expected a channel that writes to a SQLite, PostgreSQL or "
                                     "CrateDB storage, got storage = s"),
], ids=["per-network", "mqtt"])
def test_a_channels_merge_needs_a_sql_storage_of_per_address_tables(storage, expected):
    with pytest.raises(ConfigError) as info:
        loads(textwrap.dedent(BASE.format(storage=storage)) + "merge = 10s\n", source="gw.ini")
    assert any(expected in str(problem) for problem in info.value.problems), info.value.problems


def test_a_channels_ddl_needs_a_storage_with_tables():
    """A channel's ddl with only a sink (a live page, a Kafka topic) was taken and did nothing; beside an SQL
    storage (a tee) it is that storage's."""
    from lorrygate.config.loader import loads
    from lorrygate.errors import ConfigError

    text = ("[broker:b]\nhost = localhost\n[storage:live]\nurl = ws://127.0.0.1:9482/\n[storage:db]\n"
            "url = sqlite:///x.sqlite\n[channel:c]\ntopics = a/#\nstorage = {storages}\n"
            "ddl = CREATE TABLE {{table}} (time TEXT, x INTEGER)\n")
    with pytest.raises(ConfigError) as raised:
        loads(text.format(storages="live"), source="gw.ini")
    assert [str(p) for p in raised.value.problems] == [
        "gw.ini [channel:c] ddl: expected a channel that writes to a SQLite, PostgreSQL or CrateDB storage, got "
        "storage = live"]
    assert loads(text.format(storages="db, live")).channels[0].ddl is not None
