"""
``lorrygate backfill``: load recorded files through a channel on a Dask
cluster.

``lorrygate backfill -c FILE --source 'GLOB' [--channel NAME] [--topic TEMPLATE]
[--scheduler tcp://HOST:8786] [--workers N]`` plans one task per file and runs
them on ``dask.distributed`` workers (without ``--scheduler``, on a local
cluster of ``--workers`` processes). Each task reads its file (plain,
``.gz``, ``.zst``) line by line, runs the channel's own topology strategy,
decoder chain and transform on each line, and writes through the channel's
storages in batches.

Each line is written once, however often Dask runs a task (a worker that dies
takes its task with it, and the scheduler runs it again elsewhere): a line
carries its byte range in its file (the same ``position`` a files source
gives it), and PostgreSQL keeps the ranges it holds in the transaction that
stores the rows (`lorrygate.storage.positions`); CrateDB, which has no
transactions, needs ``idempotent = true`` (rows keyed by their content). A
line without a time of its own gets its file's modification time, so that a
rerun computes the same row. SQLite takes one writer at a time and is refused.

Progress: files done, rows, rows/s and an ETA by bytes, one line per file,
and the link to Dask's own dashboard.
"""

import glob
import os
import sys
import threading
import time

EXIT_USAGE = 2
EXIT_RUNTIME = 1
#: lines routed and written together
BATCH = 5000

_reactor_lock = threading.Lock()
_reactor_thread = None


def running_reactor():
    """The process's Twisted reactor, running in a thread of its own (on a Dask worker)."""
    global _reactor_thread
    from twisted.internet import reactor

    with _reactor_lock:
        if _reactor_thread is None:
            _reactor_thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                                               name="lorrygate-reactor", daemon=True)
            _reactor_thread.start()
    return reactor


def refuse(settings, channel) -> str:
    """Why the channel's storages cannot take a distributed backfill ("" when they can)."""
    for name in channel.storages:
        storage = settings.storages[name]
        if storage.kind == "sqlite":
            return (f"storage {name} is SQLite, which takes one writer at a time: a distributed backfill cannot "
                    "write into it; use PostgreSQL or CrateDB, or read the files with a files source "
                    "([source:NAME] type = files), which writes from one process")
        if storage.kind == "crate" and not storage.idempotent:
            return (f"storage {name} is CrateDB without idempotent = true: a task that Dask runs again would store "
                    "its rows twice; set idempotent = true")
        if storage.kind not in ("postgresql", "crate"):
            return f"storage {name} is a {storage.kind} sink; a backfill writes into PostgreSQL or CrateDB"
    return ""


def load_file(config_text: str, config_path: str, channel_name: str, topic: str, path: str) -> dict:
    """One task: a file through the channel into its storages; counts. Runs on a worker."""
    from twisted.internet.threads import blockingCallFromThread

    reactor = running_reactor()
    return blockingCallFromThread(reactor, _load_file, reactor, config_text, config_path, channel_name, topic, path)


async def _load(reactor, config_text, config_path, channel_name, topic, path) -> dict:
    from twisted.internet.defer import Deferred

    from lorrygate.config.loader import loads
    from lorrygate.model import Message
    from lorrygate.service.channel_service import make_router
    from lorrygate.service.storage_service import make_backend, storage_ddl
    from lorrygate.sources.files import Reader, fingerprint, first_line, fixed_part, topic_for
    from lorrygate.storage.batch import Collector

    settings = loads(config_text, config_path, os.path.dirname(os.path.abspath(config_path)))
    channel = next(c for c in settings.channels if c.name == channel_name)
    stat = os.stat(path)
    reader = Reader(path)
    head = first_line(reader) or b""
    stream = f"files:{channel.name}:{stat.st_ino}-{fingerprint(head)}-0"
    message_topic = topic_for(topic, path, fixed_part(path))
    received = stat.st_mtime
    backends = {name: make_backend(settings.storages[name], reactor, storage_ddl(settings, name))
                for name in channel.storages}
    counts = {"path": path, "lines": 0, "rows": 0, "dead": 0, "bytes": 0}
    for backend in backends.values():
        await Deferred.fromCoroutine(_started(backend))
    collectors = tuple(Collector() for _ in channel.storages)
    router, decoders = make_router(settings, channel, collectors, reactor)
    for decoder in decoders:
        if hasattr(decoder, "start"):
            decoder.start()
    try:
        offset, mark, buffer = 0, 0, b""
        while True:
            chunk = reader.read(offset + len(buffer), 1 << 20)
            data = buffer + chunk
            lines = []
            position = 0
            while True:
                newline = data.find(b"\n", position)
                if newline < 0:
                    break
                line = data[position:newline].rstrip(b"\r")
                position = newline + 1
                if line.strip():
                    end = offset + position
                    lines.append((line, mark, end))
                    mark = end
            if not chunk and data[position:].strip():  # a last line without a line end
                end = offset + len(data)
                lines.append((data[position:].rstrip(b"\r"), mark, end))
                position = len(data)
            offset += position
            buffer = data[position:]
            for start in range(0, len(lines), BATCH):
                part = lines[start:start + BATCH]
                for collector in collectors:
                    collector.entries, collector.dead = [], []
                for line, low, high in part:
                    router(Message(message_topic, line, 1, False, received, message_topic,
                                   position=(stream, low, high)))
                await router.settle()
                counts["lines"] += len(part)
                for name, collector in zip(channel.storages, collectors):
                    batch = collector.batch()
                    if not batch.empty:
                        await _write(backends[name], batch, reactor)
                    if name == channel.storage:
                        counts["rows"] += batch.rows - len(batch.dead_letters)
                        counts["dead"] += len(batch.dead_letters)
            counts["bytes"] = offset
            if not chunk:
                break
    finally:
        reader.close()
        for decoder in decoders:
            if hasattr(decoder, "stop"):
                decoder.stop()
        main = backends[channel.storage]
        counts["again"] = main.details().get("held_already", 0) if hasattr(main, "details") else 0
        for backend in backends.values():
            await backend.stop()
    return counts


def _load_file(reactor, *args):
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(_load(reactor, *args))


async def _started(backend) -> None:
    await backend.start()


async def _write(backend, batch, reactor, attempts: int = 5) -> None:
    """Write a batch; a storage that fails for a while (another worker creating the same table, a
    restart) is tried again: what it holds already is left out."""
    from twisted.internet.task import deferLater

    from lorrygate.errors import StorageError

    for attempt in range(attempts):
        try:
            await backend.write(batch)
            return
        except StorageError:
            if attempt + 1 == attempts:
                raise
            await deferLater(reactor, 0.2 * 2**attempt, lambda: None)


def backfill_command(settings, args, out=None, err=None) -> int:
    from lorrygate.errors import did_you_mean

    out, err = out or sys.stdout, err or sys.stderr
    channels = {channel.name: channel for channel in settings.channels}
    if args.channel:
        channel = channels.get(args.channel)
        if channel is None:
            print(f"lorrygate backfill: {settings.source} has no channel {args.channel!r}"
                  f"{did_you_mean(args.channel, channels)} (it has {', '.join(channels)})", file=err)
            return EXIT_USAGE
    elif len(channels) == 1:
        channel = next(iter(channels.values()))
    else:
        print(f"lorrygate backfill: name the channel (--channel; {settings.source} has {', '.join(channels)})",
              file=err)
        return EXIT_USAGE
    why = refuse(settings, channel)
    if why:
        print(f"lorrygate backfill: {why}", file=err)
        return EXIT_USAGE
    if not args.source:
        print("lorrygate backfill: --source GLOB names the recorded files (or --source dead-letters)", file=err)
        return EXIT_USAGE
    replaying = args.source == "dead-letters"
    paths = [] if replaying else sorted(path for path in glob.glob(os.path.abspath(args.source), recursive=True)
                                        if os.path.isfile(path))
    if not replaying and not paths:
        print(f"lorrygate backfill: no file matches {args.source!r}", file=err)
        return EXIT_USAGE
    if replaying and settings.storages[channel.storage].kind != "postgresql":
        print(f"lorrygate backfill --source dead-letters: the dead letters of storage {channel.storage} are "
              "replayed on a cluster from PostgreSQL only (lorrygate dead-letters replay does it in one process)",
              file=err)
        return EXIT_USAGE
    if replaying and args.topic:
        from lorrygate.mqtt.topics import parse_filter

        try:
            parse_filter(args.topic)
        except ValueError as exc:
            print(f"lorrygate backfill: --topic {args.topic!r} is not an MQTT topic filter: {exc}", file=err)
            return EXIT_USAGE
    topic = args.topic or _topic_of(settings, channel)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("lorrygate backfill: needs dask.distributed (pip install 'lorrygate[dask]')", file=err)
        return EXIT_USAGE
    with open(settings.source, encoding="utf-8") as handle:
        text = handle.read()
    cluster = None
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
    if replaying:
        try:
            return _replay_on(client, settings, text, channel, out, err, args.topic or "")
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    total = sum(os.path.getsize(path) for path in paths)
    print(f"backfill: {len(paths)} file(s), {total:,} bytes, channel {channel.name} into "
          f"{', '.join(channel.storages)}; Dask dashboard: {client.dashboard_link}", file=out, flush=True)
    started = time.monotonic()
    done_bytes = rows = lines = dead = again = 0
    failed = []
    try:
        futures = [client.submit(load_file, text, os.path.abspath(settings.source), channel.name, topic, path,
                                 key=f"lorrygate-backfill-{index}-{os.path.basename(path)}", pure=False, retries=2)
                   for index, path in enumerate(paths)]
        for count, result in finished(futures, failed):
            done_bytes += os.path.getsize(result["path"])
            rows, lines, dead = rows + result["rows"], lines + result["lines"], dead + result["dead"]
            again += result.get("again", 0)
            elapsed = max(time.monotonic() - started, 1e-6)
            eta = elapsed * (total - done_bytes) / done_bytes if done_bytes else float("nan")
            print(f"  {bar(done_bytes / total if total else 1.0)} {count}/{len(paths)} files, {rows:,} rows, "
                  f"{rows / elapsed:,.0f} rows/s, ETA {eta:.0f} s ({os.path.basename(result['path'])}: "
                  f"{result['rows']:,} rows)", file=out, flush=True)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    elapsed = time.monotonic() - started
    print(f"backfill: {lines:,} lines, {rows:,} rows and {dead:,} dead letters in {elapsed:.1f} s"
          + (f"; {again:,} lines of tasks run again were stored already and left out" if again else ""), file=out)
    if failed:
        print("lorrygate backfill: these files failed (run it again: what is stored is not stored twice):\n  "
              + "\n  ".join(failed), file=err)
        return EXIT_RUNTIME
    return 0


def replay_range(config_text: str, config_path: str, storage_name: str, filters, low: int, high: int) -> dict:
    """One task: the dead letters of ``storage_name`` with ids in [low, high) replayed; counts. Runs on a worker."""
    import attrs
    from twisted.internet.defer import Deferred
    from twisted.internet.threads import blockingCallFromThread

    from lorrygate.config.loader import loads
    from lorrygate.storage.dead_letters import replay_storage

    reactor = running_reactor()
    settings = loads(config_text, config_path, os.path.dirname(os.path.abspath(config_path)))
    part = attrs.evolve(filters, ids=(low, high))
    return blockingCallFromThread(
        reactor, lambda: Deferred.fromCoroutine(replay_storage(settings, settings.storages[storage_name], part,
                                                               reactor)))


def _dead_letter_tasks(client, settings, text, channel, filters, per_task: int) -> list:
    from lorrygate.storage.dead_letters import Table

    table = Table(settings.storages[channel.storage])
    try:
        if not table.exists():
            return []
        table.prepare()
        low, high = table.id_range(filters)
    finally:
        table.close()
    if low is None:
        return []
    return [client.submit(replay_range, text, os.path.abspath(settings.source), channel.storage, filters, start,
                          min(start + per_task, high + 1), key=f"lorrygate-replay-{start}", pure=False, retries=2)
            for start in range(low, high + 1, per_task)]


def _replay_on(client, settings, text, channel, out, err, topic: str = "", per_task: int = 10_000) -> int:
    """Replay a channel's dead letters (those whose topic matches ``topic``) on the cluster, in tasks of
    ``per_task`` ids."""
    from lorrygate.storage.dead_letters import Filters

    filters = Filters(channel=channel.name, topic=topic)
    futures = _dead_letter_tasks(client, settings, text, channel, filters, per_task)
    print(f"backfill: the dead letters of channel {channel.name} in {len(futures)} task(s); Dask dashboard: "
          f"{client.dashboard_link}", file=out, flush=True)
    totals = {"replayed": 0, "rows": 0, "failing": 0}
    failed = []
    for count, result in finished(futures, failed):
        for key in totals:
            totals[key] += result[key]
        print(f"  [{count}/{len(futures)}] {totals['replayed']:,} replayed, {totals['failing']:,} still failing",
              file=out, flush=True)
    print(f"backfill: {totals['replayed']:,} dead letters replayed ({totals['rows']:,} rows), {totals['failing']:,} "
          "still failing", file=out)
    if failed:
        print("lorrygate backfill: these tasks failed (run it again: what is replayed is marked):\n  "
              + "\n  ".join(failed), file=err)
        return EXIT_RUNTIME
    return 0


def finished(futures, failed: list):
    """``(count, result)`` of each task as it finishes; a task that failed goes into ``failed``."""
    from distributed import as_completed

    for count, future in enumerate(as_completed(futures), 1):
        try:
            yield count, future.result()
        except Exception as exc:
            failed.append(f"{future.key}: {type(exc).__name__}: {exc}")


def bar(fraction: float, width: int = 24) -> str:
    """A text progress bar: ``[#########---------------]  38%``."""
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction:4.0%}"


def _topic_of(settings, channel) -> str:
    source = settings.sources.get(channel.source)
    if source is not None and source.type == "files":
        return source.topic
    return f"{channel.name}/{{stem}}"
