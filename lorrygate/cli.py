# PYTHON_ARGCOMPLETE_OK
"""
The ``lorrygate`` command.

    lorrygate -c etc/gateway.ini            run the gateway
    lorrygate check -c etc/gateway.ini      validate a config and exit
    lorrygate status -c etc/gateway.ini     what the running gateway buffers, per table
    lorrygate flush -c etc/gateway.ini      make the running gateway commit everything now
    lorrygate launch "mqtt://localhost/mqttkit-1/%23 ! sqlite:///var/data.sqlite"
    lorrygate relay mqtt://localhost/testdrive/%23 sqlite:///var/data.sqlite
    lorrygate inspect [ELEMENT]             the elements of the launch language
    lorrygate describe -c etc/gateway.ini --topic T   where a topic goes, per storage; runs nothing
    lorrygate spool list|drain|discard      the disk spools of a data directory
    ... --describe [--topic TOPIC]...       print the pipeline (and where topics go), run nothing

The config is validated completely before the reactor starts; every problem
is printed at once and the exit code is 2. Paths in a config file are
relative to its folder. Options go before or after the command; ``-V`` prints
the version. Shell completion: ``eval "$(register-python-argcomplete
lorrygate)"`` (the argcomplete package).
"""

import argparse
import os
import sys

from lorrygate import __version__
from lorrygate.errors import ConfigError

EXIT_CONFIG = 2
EXIT_RUNTIME = 1
#: how long a SIGTERM or Ctrl-C during the start waits for it to finish before the gateway stops without it
#: (a storage connecting takes up to its connect timeout; with the graceful stop after it, below systemd's 90 s)
START_WAIT = 60.0


COMMANDS = ("run", "check", "status", "flush", "launch", "relay", "inspect", "describe", "spool", "dead-letters", "backfill")

#: options that take a value, for finding the command word among the arguments
_VALUED = ("-c", "--config", "--log-format", "--log-level", "--messages", "--topic", "--field", "--data-dir", "--channel",
           "--stage", "--since", "--until", "--storage", "--limit", "--source", "--scheduler", "--workers")

EXAMPLES = {
    "run": "  lorrygate -c etc/gateway.ini\n  lorrygate run -c etc/gateway.ini --reload\n"
           "  lorrygate run -c etc/gateway.ini --dry-run --messages recorded.ndjson",
    "check": "  lorrygate check -c etc/gateway.ini",
    "status": "  lorrygate status -c etc/gateway.ini\n  lorrygate status -c etc/gateway.ini --json",
    "flush": "  lorrygate flush -c etc/gateway.ini",
    "launch": '  lorrygate launch "mqtt://localhost/mqttkit-1/%23 ! sqlite:///var/data.sqlite"\n'
              '  lorrygate launch --describe --topic mqttkit-1/a/b/c/data.json "mqtt://localhost/%23 ! crate://localhost/"\n'
              '  lorrygate launch "mqtt://localhost/%23 ! sqlite:///var/x.sqlite" --dry-run',
    "relay": "  lorrygate relay mqtt://localhost/testdrive/%23 sqlite:///var/data.sqlite\n"
             "  lorrygate relay --dry-run mqtt://localhost/testdrive/%23 crate://localhost/",
    "inspect": "  lorrygate inspect\n  lorrygate inspect tee",
    "describe": "  lorrygate describe -c etc/gateway.ini\n"
                "  lorrygate describe -c etc/gateway.ini --topic mqttkit-1/testdrive/area-42/node-1/data.json\n"
                "  lorrygate describe -c etc/fleet.ini --topic tele/plug-1/SENSOR --field ENERGY.Power",
    "spool": "  lorrygate spool list -c etc/gateway.ini\n  lorrygate spool drain db -c etc/gateway.ini --adopt\n"
             "  lorrygate spool discard db -c etc/gateway.ini --yes",
    "dead-letters": "  lorrygate dead-letters list -c etc/gateway.ini --since 1d\n"
                    "  lorrygate dead-letters replay -c etc/gateway.ini --channel mqttkit --stage decode\n"
                    "  lorrygate dead-letters purge -c etc/gateway.ini --replayed --yes",
    "backfill": "  lorrygate backfill -c etc/archive.ini --source '/srv/recordings/2026-*/*.ndjson.gz'\n"
                "  lorrygate backfill -c etc/archive.ini --source '/srv/rec/*.csv' --scheduler tcp://dask:8786",
}


def _common(config: bool = True, pipeline: bool = False, runtime: bool = False) -> argparse.ArgumentParser:
    """Options shared by several commands; SUPPRESS so that a value given before
    the command is not overwritten by the command's default."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    if config:
        common.add_argument("-c", "--config", help="ini file (default: etc/gateway.ini)")
    common.add_argument("--log-format", choices=("text", "json"), help="overrides [lorrygate] log_format")
    common.add_argument("--log-level", choices=("debug", "info", "warn", "error"), help="overrides log_level")
    if runtime:
        common.add_argument("--dry-run", action="store_true",
                            help="decode and print rows instead of writing them (from the source, or from --messages)")
        common.add_argument("--messages", help="--dry-run: a file of recorded messages, one JSON object a line "
                                                        "(mosquitto_sub -F %%j), or mosquitto_sub -v lines")
        common.add_argument("--describe", action="store_true",
                            help="print the pipeline and where --topic goes; run nothing")
        common.add_argument("--topic", action="append", help="a sample topic for --describe (repeatable)")
        common.add_argument("--field", action="append",
                            help="--describe: a field name, to show the column it gets in each storage (repeatable)")
    if pipeline:
        common.add_argument("--data-dir", help="where spools and the lock live (default: var)")
    return common


DEFAULTS = {"config": "etc/gateway.ini", "log_format": None, "log_level": None, "dry_run": False, "messages": None,
            "describe": False, "topic": [], "field": [], "data_dir": "var", "json": False, "reload": False, "arguments": [],
            "adopt": False, "yes": False, "storage": None, "channel": None, "stage": None, "since": None,
            "until": None, "limit": 20, "replayed": False, "source": None, "scheduler": None, "workers": 2}


def _at_least(least: int):
    """An argument's type: a whole number of at least ``least`` (``--limit -1`` was a traceback, ``--workers 0`` a
    local cluster without workers that waited for good)."""
    def whole(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = None
        if number is None or number < least:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {least}, got {text!r}")
        return number

    whole.__name__ = "number"  # (argparse names the type in its message)
    return whole


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorrygate", description="Topic-routing data-acquisition gateway.", parents=[_common(runtime=True)],
        epilog="Without a command, lorrygate runs the gateway (lorrygate run). "
               "Each command has its own --help with examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    parser.add_argument("-V", "--version", action="version", version=f"lorrygate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, parents) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=parents, epilog="examples:\n" + EXAMPLES[name],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   argument_default=argparse.SUPPRESS)

    run = command("run", "run the gateway (the default command)", [_common(runtime=True)])
    run.add_argument("--reload", action="store_true", help="reload when the config or strategies/ change")
    command("check", "validate a config and exit", [_common()])
    for name, text in (("status", "what the running gateway buffers, per table"),
                       ("flush", "make the running gateway commit everything now")):
        command(name, text, [_common()]).add_argument("--json", action="store_true", help="print the JSON answer")
    for name, text, what in (("launch", "run a pipeline of the launch language", "the pipeline"),
                             ("relay", "relay from a source URL to a sink URL (LorryStream's URLs)", "SOURCE-URL SINK-URL")):
        sub = command(name, text, [_common(config=False, pipeline=True, runtime=True)])
        sub.add_argument("arguments", nargs="*", metavar="ARGUMENT", help=what)
    sub = command("inspect", "the elements of the launch language", [])
    sub.add_argument("arguments", nargs="*", metavar="ELEMENT")
    sub = command("describe", "print the pipeline of a config and where --topic goes; run nothing", [_common()])
    sub.add_argument("--topic", action="append", help="a sample topic (repeatable)")
    sub.add_argument("--field", action="append",
                     help="a field name, to show the column it gets in each storage (repeatable)")
    spool = command("spool", "list, drain or discard the disk spools of a data directory", [_common(pipeline=True)])
    spool.add_argument("action", choices=("list", "drain", "discard"))
    spool.add_argument("storage", nargs="?", help="drain, discard: the storage whose spool it is")
    spool.add_argument("--adopt", action="store_true",
                       help="drain: write the batches into the configured storage although they were spooled for "
                            "another target")
    spool.add_argument("--yes", action="store_true", help="discard: yes, delete the spooled batches")
    dead = command("dead-letters", "list, replay (after a fix) or purge the dead letters of the SQLite, PostgreSQL "
                                   "and CrateDB storages",
                   [_common(pipeline=True)])
    dead.add_argument("action", choices=("list", "replay", "purge"))
    dead.add_argument("--channel", help="only this channel's")
    dead.add_argument("--stage", choices=("topology", "decode", "transform", "store", "size", "internal"),
                      help="only those rejected at this stage")
    dead.add_argument("--topic", help="only those whose topic matches this MQTT filter")
    dead.add_argument("--since", help="received at or after: ISO 8601, or a duration back from now (2h, 1d)")
    dead.add_argument("--until", help="received before: ISO 8601, or a duration back from now")
    dead.add_argument("--storage", help="only this storage's (default: every SQLite, PostgreSQL and CrateDB storage)")
    dead.add_argument("--limit", type=_at_least(0), default=20, help="list: show the latest this many (default 20)")
    dead.add_argument("--replayed", action="store_true", help="purge: only those already replayed")
    dead.add_argument("--yes", action="store_true", help="purge: yes, delete them")
    back = command("backfill", "load recorded files through a channel on a Dask cluster (PostgreSQL, CrateDB)",
                   [_common(pipeline=True)])
    back.add_argument("--source", help="a glob of recorded files (plain, .gz, .zst), one line a message; or "
                                       "dead-letters: the channel's dead letters (PostgreSQL), replayed")
    back.add_argument("--channel", help="the channel whose strategy, decoders and storages are used")
    back.add_argument("--topic", help="files: the topic of each file's lines, {stem} {name} {dir} {path} filled "
                                      "in (default: the channel's files source's topic, else <channel>/{stem}); "
                                      "dead-letters: only those whose topic matches this MQTT filter")
    back.add_argument("--scheduler", help="a running Dask scheduler, tcp://HOST:8786 (default: a local cluster)")
    back.add_argument("--workers", type=_at_least(1), default=2, help="worker processes of the local cluster (default 2)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line; without a command word, ``run`` is meant."""
    argv = list(sys.argv[1:] if argv is None else argv)
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token in _VALUED:
            skip = True
            continue
        if token.startswith("-"):
            continue
        break
    else:
        token = None
    if token not in COMMANDS and not any(a in ("-h", "--help", "-V", "--version") for a in argv):
        argv = ["run"] + argv
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (argcomplete's hook sets it); 6 ms to import
        try:
            import argcomplete
        except ImportError:
            pass
        else:
            argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    for key, value in DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, list(value) if isinstance(value, list) else value)
    if getattr(args, "command", None) is None:
        args.command = "run"
    return args


#: the options of running a gateway or a pipeline, and the commands that read each (given before a command word,
#: as ``lorrygate --dry-run dead-letters replay``, the top parser took them, and the command did not read them)
_RUNTIME_OPTIONS = {"dry_run": ("--dry-run", ("run", "launch", "relay")),
                    "messages": ("--messages", ("run", "launch", "relay")),
                    "describe": ("--describe", ("run", "launch", "relay")),
                    "topic": ("--topic", ("run", "launch", "relay", "describe", "dead-letters", "backfill")),
                    "field": ("--field", ("run", "launch", "relay", "describe")),
                    "reload": ("--reload", ("run",))}


def misused_option(args) -> str | None:
    """What is wrong with the options of running, where they are given but not read: a command that takes none
    (``lorrygate --dry-run dead-letters replay`` replayed for real), ``--messages`` without ``--dry-run`` (the
    gateway ran on its brokers, the recording unread), ``--topic`` or ``--field`` without ``--describe``, or
    ``--reload`` with a dry run or a description; None when nothing is."""
    given = {name for name in _RUNTIME_OPTIONS if getattr(args, name) != DEFAULTS[name]}
    for name in sorted(given):
        option, commands = _RUNTIME_OPTIONS[name]
        if args.command not in commands:
            return (f"{option} is not an option of lorrygate {args.command} (it is for lorrygate "
                    f"{', '.join(c for c in commands if c not in ('dead-letters', 'backfill'))})")
    if args.command not in ("run", "launch", "relay"):
        return None
    if "messages" in given and not args.dry_run:
        return "--messages needs --dry-run (without it, the gateway runs on its brokers and reads no recording)"
    if "describe" in given and args.dry_run:
        return "--describe or --dry-run: one of them (--describe runs nothing)"
    for name in ("topic", "field"):
        if name in given and not args.describe:
            example = ("lorrygate describe -c FILE --topic TOPIC" if args.command == "run" else
                       f"lorrygate {args.command} --describe --topic TOPIC ...")
            return f"{_RUNTIME_OPTIONS[name][0]} needs --describe ({example})"
    if "reload" in given and (args.describe or args.dry_run):
        return "--reload is for running the gateway, not with --describe or --dry-run"
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    wrong = misused_option(args)
    if wrong is not None:
        print(f"lorrygate {args.command}: {wrong}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "inspect":
        return inspect(args.arguments)
    if args.command in ("launch", "relay"):
        return launch(args)
    from lorrygate.config import load

    if args.command in ("status", "flush"):
        from lorrygate.config.loader import load_gateway

        try:
            gateway = load_gateway(args.config)
        except ConfigError as exc:
            print(exc.render(), file=sys.stderr)
            return EXIT_CONFIG
        return control(gateway, args.config, args.command, args.json)
    runs = args.command in (None, "run") and not args.describe and not args.dry_run
    try:
        settings = load(args.config, on_storage=_read_ahead if runs else None)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        for warning in settings.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{args.config}: OK, {len(settings.channels)} channel(s)"
              + (f", {len(settings.warnings)} warning(s)" if settings.warnings else ""))
        return 0
    if args.command == "spool":
        from lorrygate.storage.spool_admin import spool_command

        return spool_command(settings, args)
    if args.command == "backfill":
        from lorrygate.backfill import backfill_command

        return backfill_command(settings, args)
    if args.command == "dead-letters":
        from lorrygate.storage.dead_letters import dead_letters_command

        return dead_letters_command(settings, args)
    if args.describe or args.command == "describe":
        from lorrygate.pipeline.describe import describe

        print(describe(settings, args.topic or (), args.field or ()))
        return 0
    if args.dry_run:
        from lorrygate.pipeline.dryrun import dry_run

        return dry_run(settings, args.messages)
    if args.reload:
        from lorrygate.config.settings import installed, needs

        if not installed("watchdog"):
            print(f"lorrygate: --reload {needs('watchdog', 'watching the config')[len('watching the config '):]}; "
                  "SIGHUP reloads without it", file=sys.stderr)
            return EXIT_CONFIG
    return run(settings, args.log_format or settings.gateway.log_format, args.log_level or settings.gateway.log_level,
               reload=args.reload)


def inspect(arguments) -> int:
    from lorrygate.pipeline.elements import describe_elements

    try:
        print(describe_elements(arguments[0] if arguments else None))
    except KeyError:
        print(f"no element {arguments[0]!r}; lorrygate inspect lists them", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def launch(args) -> int:
    from lorrygate.errors import LorrygateError
    from lorrygate.pipeline.model import parse_launch

    if args.command == "relay":
        if len(args.arguments) != 2:
            print("usage: lorrygate relay SOURCE-URL SINK-URL", file=sys.stderr)
            return EXIT_CONFIG
        text = " ! ".join(args.arguments)
    else:
        if not args.arguments:
            print('usage: lorrygate launch "SOURCE ! ... ! SINK"', file=sys.stderr)
            return EXIT_CONFIG
        text = " ".join(args.arguments)
    try:
        pipeline = parse_launch(text, data_dir=args.data_dir)
    except LorrygateError as exc:
        print(f"lorrygate {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.describe:
        print(pipeline.describe(args.topic, args.field or ()))
        return 0
    if args.dry_run:
        from lorrygate.pipeline.dryrun import dry_run

        return dry_run(pipeline.settings, args.messages)
    return pipeline.run(args.log_format or "text", args.log_level or "info")


def control(gateway, source: str, command: str, as_json: bool) -> int:
    import json

    from lorrygate.control_client import render_status, request

    endpoint = gateway.control_endpoint
    if endpoint is None:
        print(f"{source}: [lorrygate] control = off, so there is nothing to ask", file=sys.stderr)
        return EXIT_RUNTIME
    token = gateway.control_token.reveal() if gateway.control_token is not None else None
    try:
        if command == "status":
            answer = request(endpoint, "GET", "/status", token=token)
        else:
            answer = request(endpoint, "POST", "/flush", token=token)
    except OSError as exc:
        print(f"no gateway answers at {endpoint} ({exc}); is it running with {source}?", file=sys.stderr)
        return EXIT_RUNTIME
    if as_json:
        print(json.dumps(answer, indent=2))
    elif command == "status":
        print(render_status(answer))
    else:
        print(("flushed: everything buffered is committed" if answer["flushed"] else
               "flush timed out: some rows are still pending") + "\n" + render_status(answer["status"]))
    return 0 if command == "status" or answer["flushed"] else EXIT_RUNTIME


def _read_ahead(storage) -> None:
    """Start reading an SQLite storage's tables and columns while the rest of the configuration is checked and
    the gateway imports (10,000 tables: ~0.13 s; started once its section is read, the first write no longer
    waits ~50 ms for it)."""
    if storage.kind == "sqlite":
        from lorrygate.storage.sqlite_schema import read_ahead

        read_ahead(storage.path)


def run(settings, log_format: str, log_level: str, reload: bool = False) -> int:
    import gc
    import signal

    for storage in settings.storages.values():
        _read_ahead(storage)  # (a second call for a path is a no-op)

    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.logger import Logger

    from lorrygate.clock import steady
    from lorrygate.logs import start_logging
    from lorrygate.service.openfiles import raise_open_files
    from lorrygate.service.supervisor import Supervisor

    steady(reactor)  # timers that a step of the system clock does not move (before anything is scheduled)
    start_logging(log_format, log_level)
    log = Logger(namespace="lorrygate")
    before, after = raise_open_files()
    if after != before:
        log.debug("open files: the soft limit raised from {before} to {after} (the hard limit)", before=before,
                  after=after)
    config_path = settings.source if os.path.exists(settings.source) else None
    gateway = Supervisor(reactor, settings, config_path)
    outcome = {"code": 0}
    stopping = []

    def stopped(result):
        outcome["stopped"] = True
        return result

    def stop_failed(failure):
        log.failure("stopping failed: {error}", failure=failure, error=failure.getErrorMessage())

    def started(_):
        outcome["started"] = True
        reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(gateway.stop())
                                      .addCallbacks(stopped, stop_failed))
        if stopping:
            # a signal came while starting: stop now, the graceful way (what was delivered meanwhile is
            # committed and acknowledged)
            log.info("started; stopping as signal {signal} asked", signal=stopping[0])
            reactor.stop()
            return
        if config_path is not None:
            gateway.listen_for_sighup()
            if hangups:
                gateway.request("SIGHUP")  # (asked for while starting: the file may have changed since it was read)
            if reload:
                gateway.watch()

    def failed(failure):
        from lorrygate.errors import LorrygateError

        if failure.check(LorrygateError):
            log.error("lorrygate could not start: {error}", error=failure.getErrorMessage())
        else:
            log.failure("lorrygate could not start: {error}", failure=failure, error=failure.getErrorMessage())
        outcome["code"] = EXIT_RUNTIME
        outcome["start failed"] = True  # (the start stopped what it had started)
        if not stopping:
            stopping.append("start failed")
        if reactor.running:
            reactor.stop()

    def give_up_waiting(signum):
        if not outcome.get("started") and not outcome.get("start failed") and reactor.running:
            log.warn("signal {signal}: the start has not finished in {seconds:.0f} s; stopping without it",
                     signal=signum, seconds=START_WAIT)
            reactor.stop()

    hangups: list = []

    def hangup_while_starting():
        if stopping:
            log.info("SIGHUP while stopping: no reload")
            return
        if not hangups:
            log.info("SIGHUP while starting: reloading once started")
        hangups.append(True)

    def stop_once(signum):
        # A second SIGTERM or Ctrl-C while stopping changes nothing (Twisted's
        # own handler would call reactor.stop() again: ReactorNotRunning).
        if stopping:
            log.info("signal {signal} while stopping: already stopping", signal=signum)
            return
        stopping.append(signum)
        if not outcome.get("started") and not outcome.get("start failed"):
            # Still starting (a storage connecting, a schema read): stopping now would leave what has started
            # without its graceful stop. The stop follows the start, or START_WAIT seconds, whichever is first.
            log.info("signal {signal}: stopping once the gateway has started (commit, acknowledge, disconnect)",
                     signal=signum)
            reactor.callLater(START_WAIT, give_up_waiting, signum)
            return
        log.info("signal {signal}: stopping (commit, acknowledge, disconnect)", signal=signum)
        reactor.stop()

    def begin():
        # The hot path allocates many short-lived objects and few cycles. The
        # young generation's count is tracked objects made less those freed, so
        # it grows by what waits for a commit (~5 objects a message): at 50,000 a
        # drain of 20,000 waiting messages ran two collections a write, ~5 ms
        # each, that found nothing (10,000 tables: 70-100 ms of a 2 s drain,
        # measured); at 200,000 it ran none. Garbage in cycles waits up to that
        # many objects before it is collected.
        gc.freeze()
        gc.set_threshold(200_000, 20, 100)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, frame: reactor.callFromThread(stop_once, number))
        if config_path is not None:
            # SIGHUP's default action ends the process: until the gateway has started, a reload is noted
            signal.signal(signal.SIGHUP, lambda number, frame: reactor.callFromThread(hangup_while_starting))
        elif signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            # a pipeline (`lorrygate launch`) has no file to read again: the terminal it ran in closed, so stop
            # the graceful way rather than die (SIGHUP's default); ``nohup`` (SIGHUP ignored) keeps it running
            signal.signal(signal.SIGHUP, lambda number, frame: reactor.callFromThread(stop_once, number))
        Deferred.fromCoroutine(gateway.start()).addCallbacks(started, failed)

    reactor.callWhenRunning(begin)
    reactor.run()
    if stopping and not outcome.get("stopped") and not outcome.get("start failed"):
        # The reactor ended without the graceful stop (it failed, or the gateway had not finished
        # starting): the storages' threads would keep the process alive for ever. Exit instead; what
        # was not committed was not acknowledged, and the broker delivers it again.
        log.error("lorrygate stopped without its graceful stop; exiting now (what was not committed is "
                  "delivered again)")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_RUNTIME)
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main())
