"""What ``--reload`` watches: besides the config's folder and the strategies directory, the files the
configuration reads wherever they are (a codec, a DDL file, a TLS file, a ``${FILE:path}``), whose edits only
SIGHUP saw."""

import os
import textwrap

from watchdog.observers import Observer

from lorrygate.config import load
from lorrygate.service.supervisor import Supervisor


def config(tmp_path):
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    (etc / "strategies").mkdir()
    elsewhere.mkdir()
    for name in ("size.js", "table.sql", "ca.pem", "password", "unrelated.js"):
        (elsewhere / name).write_text("x\n")
    (elsewhere / "size.js").write_text("function decode(payload, topic) { return {n: payload.length}; }\n")
    (elsewhere / "table.sql").write_text("CREATE TABLE {table} (time TIMESTAMP)")
    path = etc / "gateway.ini"
    path.write_text(textwrap.dedent("""
        [lorrygate]
        strategies = strategies

        [broker:b]
        host = localhost
        username = gw
        password = ${FILE:../elsewhere/password}
        tls = true
        tls_ca = ../elsewhere/ca.pem

        [storage:s]
        url = sqlite:///x.sqlite
        ddl = @../elsewhere/table.sql

        [decoder:size]
        type = javascript
        file = ../elsewhere/size.js

        [channel:c]
        source = b
        topics = #
        storage = s
        decoders = size
        """))
    return load(str(path)), etc, elsewhere


def test_the_settings_name_the_files_the_configuration_reads(tmp_path):
    settings, _, elsewhere = config(tmp_path)
    assert settings.files == tuple(str(elsewhere / name) for name in ("ca.pem", "password", "size.js", "table.sql"))


def test_reload_watches_those_files_and_not_their_neighbours(tmp_path):
    settings, etc, elsewhere = config(tmp_path)
    supervisor = Supervisor(reactor=None, settings=settings, config_path=str(etc / "gateway.ini"))
    supervisor._observer, supervisor._handler = Observer(), object()
    supervisor._watch_code()
    assert sorted(supervisor._code_watches) == [str(elsewhere), str(etc / "strategies")]
    for name in ("size.js", "table.sql", "ca.pem", "password"):
        assert supervisor.is_input(str(elsewhere / name)), name
    assert not supervisor.is_input(str(elsewhere / "unrelated.js"))
    assert supervisor.is_input(str(etc / "gateway.ini")) and supervisor.is_input(str(etc / "strategies" / "x.py"))
    assert not supervisor.is_input(str(etc / "x.sqlite"))
    # a reload that reads no file there any more stops watching that folder
    (etc / "gateway.ini").write_text((etc / "gateway.ini").read_text().replace("ddl = @../elsewhere/table.sql", "")
                                     .replace("decoders = size", "")
                                     .replace("[decoder:size]\ntype = javascript\nfile = ../elsewhere/size.js\n", "").replace("tls_ca = ../elsewhere/ca.pem", "")
                                     .replace("password = ${FILE:../elsewhere/password}", "password = pw"))
    supervisor.settings = load(os.path.join(etc, "gateway.ini"))
    supervisor._watch_code()
    assert supervisor.settings.files == ()
    assert sorted(supervisor._code_watches) == [str(etc / "strategies")]
    assert not supervisor.is_input(str(elsewhere / "size.js"))
