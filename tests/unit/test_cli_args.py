"""The command line: sub-commands with their own help, options anywhere, -V."""

import pytest

from lorrygate import __version__
from lorrygate.cli import COMMANDS, main, parse_args


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_its_own_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lorrygate {command}")
    assert "examples:\n  lorrygate" in out


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag, capsys):
    with pytest.raises(SystemExit):
        main([flag])
    assert capsys.readouterr().out.strip() == f"lorrygate {__version__}"


def test_options_go_before_or_after_the_command():
    before = parse_args(["-c", "x.ini", "--log-level", "debug", "check"])
    after = parse_args(["check", "-c", "x.ini", "--log-level", "debug"])
    assert (before.command, before.config, before.log_level) == (after.command, after.config, after.log_level) \
        == ("check", "x.ini", "debug")
    assert parse_args(["-c", "x.ini"]).command == "run"  # lorrygate -c FILE keeps running the gateway


def test_describe_is_a_command(tmp_path, capsys):
    config = tmp_path / "g.ini"
    config.write_text("[broker:b]\nhost = localhost\n[storage:s]\nurl = sqlite:///s.sqlite\n[channel:c]\ntopics = r/#\n")
    assert main(["describe", "-c", str(config), "--topic", "r/n/g/x/data.json"]) == 0
    assert "topic r/n/g/x/data.json:" in capsys.readouterr().out


def test_shell_completion_completes_commands_and_options(tmp_path):
    """``eval "$(register-python-argcomplete lorrygate)"``: the shell runs lorrygate with argcomplete's variables
    set, and gets the words that complete the line (argcomplete is imported only then)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("argcomplete")
    out = tmp_path / "completions"
    for line, expected in (("lorrygate sta", {"status"}), ("lorrygate run --log-", {"--log-format", "--log-level"})):
        env = dict(os.environ, _ARGCOMPLETE="1", COMP_LINE=line, COMP_POINT=str(len(line)),
                   _ARGCOMPLETE_STDOUT_FILENAME=str(out))
        done = subprocess.run([sys.executable, "-m", "lorrygate.cli"], env=env, cwd=tmp_path, timeout=60)
        assert done.returncode == 0
        assert set(out.read_text().replace("\x0b", " ").split()) == expected


@pytest.mark.parametrize("text, back", [("90s", 90), ("2h", 7200), ("1d", 86400), ("30d", 30 * 86400), ("1.5d", 129600)])
def test_dead_letter_filters_take_durations_in_days(text, back):
    """``--since 1d`` (the help's and the docs' example) and ``--until 30d`` (a retention: purge what is older)
    were refused: durations knew no days."""
    from lorrygate.storage.dead_letters import parse_time

    assert parse_time(text, 1_000_000_000.0) == 1_000_000_000.0 - back


def test_dead_letter_filters_say_what_they_take():
    from lorrygate.config.values import Invalid
    from lorrygate.storage.dead_letters import parse_time

    with pytest.raises(Invalid, match="such as 2h or 30d"):
        parse_time("yesterday", 0.0)


@pytest.mark.parametrize("text, expected", [
    ("99999999d", "a duration back from now of at most 3650d"),  # (it said "or a duration", to a duration)
    # in the year 10000 in UTC: its text "10000-01-01T..." sorted before every dead letter's, all "since" it
    ("9999-12-31T23:59:59-05:00", "within the years 1 to 9999 in UTC"),
    ("0001-01-01T00:00:00+01:00", "within the years 1 to 9999 in UTC"),
])
def test_dead_letter_filters_refuse_times_beyond_what_they_compare(text, expected):
    from lorrygate.config.values import Invalid
    from lorrygate.storage.dead_letters import parse_time

    with pytest.raises(Invalid, match=expected):
        parse_time(text, 1_000_000_000.0)
    assert parse_time("3650d", 1e9) == 1e9 - 3650 * 86400 and parse_time("9999-12-31T23:59:59Z", 0) == 253402300799


@pytest.mark.parametrize("argv, expected", [
    (["dead-letters", "list", "--limit", "-1"], "--limit: expected a whole number of at least 0, got '-1'"),
    (["backfill", "--workers", "0"], "--workers: expected a whole number of at least 1, got '0'"),
])
def test_counts_on_the_command_line_are_checked(argv, expected, capsys):
    """``--limit -1`` was a traceback (a deque's maxlen), ``--workers 0`` a local Dask cluster of no workers,
    which waited for good."""
    with pytest.raises(SystemExit) as exit:
        parse_args(argv)
    assert exit.value.code == 2 and expected in capsys.readouterr().err
    assert parse_args(["dead-letters", "list", "--limit", "0"]).limit == 0


def test_a_dead_letter_filter_that_is_refused_is_named(tmp_path):
    """The message said "a filter", not which of the options."""
    import argparse
    import io

    from lorrygate.config import loads
    from lorrygate.storage.dead_letters import dead_letters_command

    settings = loads(f"[broker:b]\nhost = h\n[storage:s]\nurl = sqlite:///{tmp_path}/x.sqlite\n"
                     "[channel:kit]\ntopics = a/#\n")
    args = argparse.Namespace(action="list", channel=None, stage=None, topic=None, since="2h", until="garbage",
                              storage=None, yes=False, replayed=False, limit=10)
    err = io.StringIO()
    assert dead_letters_command(settings, args, io.StringIO(), err) == 2
    assert err.getvalue().startswith("lorrygate dead-letters: --until 'garbage': expected an ISO 8601 time")
    err = io.StringIO()
    args = argparse.Namespace(**dict(vars(args), until=None, topic="a/#/b"))
    assert dead_letters_command(settings, args, io.StringIO(), err) == 2
    assert err.getvalue().startswith("lorrygate dead-letters: --topic 'a/#/b': expected")


def test_replaying_the_dead_letters_of_a_channel_not_in_the_config_says_so(tmp_path):
    """It printed "0 replayed": a dead letter goes through its channel again, which that channel no longer is."""
    import argparse
    import io

    from lorrygate.config import loads
    from lorrygate.storage.dead_letters import dead_letters_command

    settings = loads(f"[broker:b]\nhost = h\n[storage:s]\nurl = sqlite:///{tmp_path}/x.sqlite\n"
                     "[channel:kit]\ntopics = a/#\n")
    args = argparse.Namespace(action="replay", channel="gone", stage=None, topic=None, since=None, until=None,
                              storage=None, yes=False, replayed=False, limit=10)
    err = io.StringIO()
    assert dead_letters_command(settings, args, io.StringIO(), err) == 2
    assert "has no channel 'gone' (kit)" in err.getvalue() and "list or purge them" in err.getvalue()
    assert not (tmp_path / "x.sqlite").exists()
    err = io.StringIO()
    assert dead_letters_command(settings, argparse.Namespace(**dict(vars(args), channel="kitt")), io.StringIO(), err) == 2
    assert "has no channel 'kitt' (did you mean 'kit'?) (kit)" in err.getvalue()


def test_the_list_of_dead_letters_shows_the_buss_time_of_each():
    """A dead letter keeps the time the bus gave its message (a Kafka record's timestamp); the list did not show it."""
    import io

    from lorrygate.storage.dead_letters import _list

    row = (7, "2026-12-06T10:00:01Z", "kit", "a/b", 1, 0, b"x", "decode", "not JSON", "json", None, None, None,
           "2026-12-06T09:58:00.250Z")
    out = io.StringIO()
    _list("db", [row, (8, *row[1:13], None)], out, 10)
    assert "#7 2026-12-06T10:00:01Z (sent 2026-12-06T09:58:00.250Z) 'a/b' decode: 'x'" in out.getvalue()
    assert "#8 2026-12-06T10:00:01Z 'a/b' decode: 'x'" in out.getvalue()


@pytest.mark.parametrize("argv, expected", [
    # given before the command word, the top parser took them and the command did not read them: a "dry run" of a
    # replay replayed for real
    (["--dry-run", "dead-letters", "replay"], "lorrygate dead-letters: --dry-run is not an option of lorrygate "
                                              "dead-letters (it is for lorrygate run, launch, relay)"),
    (["--describe", "spool", "drain", "db"], "lorrygate spool: --describe is not an option of lorrygate spool"),
    (["--topic", "a/b", "check"], "lorrygate check: --topic is not an option of lorrygate check"),
    (["--field", "temp", "check"], "lorrygate check: --field is not an option of lorrygate check"),
    # the gateway ran on its brokers, the recording unread
    (["--messages", "recorded.jsonl"], "lorrygate run: --messages needs --dry-run (without it, the gateway runs on "
                                       "its brokers and reads no recording)"),
    (["--topic", "a/b/c/d/data.json"], "lorrygate run: --topic needs --describe (lorrygate describe -c FILE --topic "
                                       "TOPIC)"),
    (["launch", "--field", "t", "mqtt://h/a ! sqlite:///x.db"], "lorrygate launch: --field needs --describe"),
    (["--describe", "--dry-run"], "lorrygate run: --describe or --dry-run: one of them"),
    (["run", "--reload", "--dry-run"], "lorrygate run: --reload is for running the gateway, not with --describe or "
                                       "--dry-run"),
])
def test_an_option_that_would_not_be_read_is_refused(argv, expected, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(expected)


def test_the_command_is_found_after_a_field_option():
    """``--field`` takes a value: its value was taken for the command word, and ``check`` after it refused."""
    assert parse_args(["-c", "x.ini", "--field", "temp", "describe"]).command == "describe"


def test_the_options_of_running_still_go_together(tmp_path, capsys):
    config = tmp_path / "g.ini"
    config.write_text("[broker:b]\nhost = localhost\n[storage:s]\nurl = sqlite:///s.sqlite\n[channel:c]\ntopics = r/#\n")
    assert main(["-c", str(config), "--describe", "--topic", "r/n/g/x/data.json", "--field", "t"]) == 0
    assert "topic r/n/g/x/data.json:" in capsys.readouterr().out
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text('{"topic": "r/n/g/x/data.json", "payload": "{\\"t\\": 1}"}\n')
    assert main(["-c", str(config), "--dry-run", "--messages", str(recorded)]) == 0
    assert '"fields": {"t": 1}' in capsys.readouterr().out
    assert main(["dead-letters", "list", "-c", str(config), "--topic", "r/#"]) == 0
