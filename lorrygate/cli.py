"""
The ``lorrygate`` command.

    lorrygate -c etc/gateway.ini            run the gateway
    lorrygate check -c etc/gateway.ini      validate a config and exit
    lorrygate status -c etc/gateway.ini     what the running gateway buffers, per table
    lorrygate flush -c etc/gateway.ini      make the running gateway commit everything now
    lorrygate launch "mqtt://localhost/mqttkit-1/%23 ! sqlite:///var/data.sqlite"
    lorrygate relay mqtt://localhost/testdrive/%23 sqlite:///var/data.sqlite
    lorrygate inspect [ELEMENT]             the elements of the launch language
    ... --describe [--topic TOPIC]...       print the pipeline (and where topics go), run nothing

The config is validated completely before the reactor starts; every problem
is printed at once and the exit code is 2.
"""

import argparse
import os
import sys

from lorrygate import __version__
from lorrygate.errors import ConfigError

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorrygate", description="Topic-routing data-acquisition gateway.")
    parser.add_argument("--version", action="version", version=f"lorrygate {__version__}")
    parser.add_argument("-c", "--config", default="etc/gateway.ini", help="ini file (default: %(default)s)")
    parser.add_argument("--log-format", choices=("text", "json"), help="overrides [lorrygate] log_format")
    parser.add_argument("--log-level", choices=("debug", "info", "warn", "error"), help="overrides log_level")
    parser.add_argument("--json", action="store_true", help="status and flush: print the JSON answer")
    parser.add_argument("--reload", action="store_true", help="reload when the config or strategies/ change")
    parser.add_argument("--dry-run", action="store_true",
                        help="decode and print rows instead of writing them (from the source, or from --messages)")
    parser.add_argument("--messages", help="--dry-run: a file of recorded messages, one JSON object a line")
    parser.add_argument("--describe", action="store_true", help="print the pipeline and where --topic goes; run nothing")
    parser.add_argument("--topic", action="append", default=[], help="a sample topic for --describe (repeatable)")
    parser.add_argument("--data-dir", default="var", help="launch and relay: where spools live (default: %(default)s)")
    parser.add_argument(
        "command", nargs="?", default="run",
        choices=("run", "check", "status", "flush", "launch", "relay", "inspect"), help="default: run",
    )
    parser.add_argument("arguments", nargs="*", help="launch: the pipeline; relay: SOURCE SINK; inspect: ELEMENT")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "inspect":
        return inspect(args.arguments)
    if args.command in ("launch", "relay"):
        return launch(args)
    from lorrygate.config import load

    try:
        settings = load(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        print(f"{args.config}: OK, {len(settings.channels)} channel(s)")
        return 0
    if args.describe:
        from lorrygate.pipeline.describe import describe

        print(describe(settings, args.topic))
        return 0
    if args.command in ("status", "flush"):
        return control(settings, args.command, args.json)
    if args.dry_run:
        from lorrygate.pipeline.dryrun import dry_run

        return dry_run(settings, args.messages)
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
        print(pipeline.describe(args.topic))
        return 0
    return pipeline.run(args.log_format or "text", args.log_level or "info")


def control(settings, command: str, as_json: bool) -> int:
    import json

    from lorrygate.control_client import render_status, request

    endpoint = settings.gateway.control_endpoint
    if endpoint is None:
        print(f"{settings.source}: [lorrygate] control = off, so there is nothing to ask", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        if command == "status":
            answer = request(endpoint, "GET", "/status")
        else:
            answer = request(endpoint, "POST", "/flush")
    except OSError as exc:
        print(f"no gateway answers at {endpoint} ({exc}); is it running with {settings.source}?", file=sys.stderr)
        return EXIT_RUNTIME
    if as_json:
        print(json.dumps(answer, indent=2))
    elif command == "status":
        print(render_status(answer))
    else:
        print(("flushed: everything buffered is committed" if answer["flushed"] else
               "flush timed out: some rows are still pending") + "\n" + render_status(answer["status"]))
    return 0 if command == "status" or answer["flushed"] else EXIT_RUNTIME


def run(settings, log_format: str, log_level: str, reload: bool = False) -> int:
    import gc

    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.logger import Logger

    from lorrygate.logs import start_logging
    from lorrygate.service.supervisor import Supervisor

    start_logging(log_format, log_level)
    log = Logger(namespace="lorrygate")
    config_path = settings.source if os.path.exists(settings.source) else None
    gateway = Supervisor(reactor, settings, config_path)
    outcome = {"code": 0}

    def started(_):
        reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(gateway.stop()))
        if config_path is not None:
            gateway.listen_for_sighup()
            if reload:
                gateway.watch()

    def failed(failure):
        log.failure("lorrygate could not start: {error}", failure=failure, error=failure.getErrorMessage())
        outcome["code"] = EXIT_RUNTIME
        reactor.stop()

    def begin():
        # The hot path allocates many short-lived objects and few cycles:
        # collect the young generation less often (measured: see issue notes).
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        Deferred.fromCoroutine(gateway.start()).addCallbacks(started, failed)

    reactor.callWhenRunning(begin)
    reactor.run()
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main())
