"""
``lorrygate dead-letters list|replay|purge``: what an operator does with
the messages a storage kept in ``lorrygate_dead_letter``.

- ``list``: the dead letters that match the filters, counted by channel,
  stage and kind of reason (`reason_kind`: reasons alike but for the
  payload's values and names are one line, with the latest as the
  example; at most `KINDS_SHOWN` lines), and the latest of them.
- ``replay``: each matching dead letter not yet replayed goes through its
  channel again as the config now says (strategy, decoder chain,
  transform): what now decodes is written into its tables and marked
  ``replayed`` in the same transaction (so a second replay finds nothing to
  do); what still fails stays as it is, counted by reason, and a message
  whose rows the storage refuses keeps its one dead letter, with the
  storage's reason (``Batch.replaying``). Rows for a
  channel's tee storages are written first, with positions, so a replay
  that is interrupted and run again stores them once too.
- ``purge --yes``: delete the matching dead letters (``--replayed``: only
  those already replayed).

Filters: ``--channel``, ``--stage``, ``--topic`` (an MQTT filter),
``--since`` and ``--until`` (ISO 8601, or a duration back from now such
as ``2h``), ``--storage`` (default: every SQLite, PostgreSQL and CrateDB
storage). CrateDB has no transactions: its dead letters are marked after
their rows are written (`lorrygate.storage.crate_dead_letters`).
"""

import collections
import datetime
import inspect
import sys
import time

import attrs

from lorrygate.config import values as v
from lorrygate.errors import did_you_mean, reason_kind
from lorrygate.mqtt.topics import parse_filter
from lorrygate.sources import headers as message_headers
from lorrygate.storage.sqlstorage import DEAD_LETTER_TABLE

EXIT_USAGE = 2
EXIT_RUNTIME = 1
#: dead letters replayed in one transaction
CHUNK = 1000
COLUMNS = ("id, received, channel, topic, qos, retain, payload, stage, error, decoder, replayed, content_type, headers, "
           "sent")
#: the columns lorrygate added to the table after it was first made, and their types in SQLite and PostgreSQL:
#: a table an earlier version made gets them
ADDED_COLUMNS = (("replayed", "TEXT", "TIMESTAMPTZ"), ("content_type", "TEXT", "TEXT"), ("headers", "TEXT", "TEXT"),
                 ("sent", "TEXT", "TIMESTAMPTZ"))


#: kinds of reason a list or a replay shows (the most frequent first); the rest are one line
KINDS_SHOWN = 20


class Kinds:
    """Reasons counted by kind (`reason_kind`) as they come, oldest first: the memory of the kinds, not of the
    reasons (a list of millions of dead letters)."""

    def __init__(self) -> None:
        self._kinds: dict = {}
        self._seen = 0

    def add(self, key, reason: str) -> None:
        self._seen += 1
        kind = (key, reason_kind(reason))
        known = self._kinds.get(kind)
        if known is None:
            self._kinds[kind] = [1, reason, self._seen]
        else:
            known[0] += 1
            known[1], known[2] = reason, self._seen

    def ranked(self) -> tuple:
        """([(count, key, the latest reason)] of the `KINDS_SHOWN` most frequent kinds (of those as frequent,
        the latest first); (kinds, reasons) of the others)."""
        ranked = sorted(self._kinds.items(), key=lambda item: (-item[1][0], -item[1][2]))
        shown = [(count, key, reason) for (key, _), (count, reason, _) in ranked[:KINDS_SHOWN]]
        rest = ranked[KINDS_SHOWN:]
        return shown, (len(rest), sum(count for _, (count, _, _) in rest))

    def show(self, line, out) -> None:
        shown, (kinds, count) = self.ranked()
        for count_of, key, reason in shown:
            print(line(count_of, key, reason), file=out)
        if kinds:
            print(f"  {count:>7}  of {kinds} other kind(s) of reason; narrow with --channel, --stage, --topic or "
                  "--since", file=out)


@attrs.frozen
class Filters:
    channel: str = ""
    stage: str = ""
    topic: str = ""
    since: float | None = None
    until: float | None = None
    #: a range of ids, [low, high) (a backfill's partition)
    ids: tuple | None = None

    def where(self, mark: str, iso) -> tuple:
        """SQL conditions and parameters (the topic filter is applied afterwards, in Python)."""
        clauses, params = [], []
        if self.channel:
            clauses.append(f"channel = {mark}")
            params.append(self.channel)
        if self.stage:
            clauses.append(f"stage = {mark}")
            params.append(self.stage)
        if self.since is not None:
            clauses.append(f"received >= {mark}")
            params.append(iso(self.since))
        if self.until is not None:
            clauses.append(f"received < {mark}")
            params.append(iso(self.until))
        if self.ids is not None:
            clauses.append(f"id >= {mark} AND id < {mark}")
            params.extend(self.ids)
        return clauses, params

    def matches(self, topic: str) -> bool:
        return not self.topic or parse_filter(self.topic).matches(topic)


#: the longest duration back from now a filter takes (further back is an ISO 8601 time)
_LONGEST_BACK = 10 * 365 * 86400


def parse_time(text: str, now: float) -> float:
    """ISO 8601 (UTC when it has no offset), or a duration back from ``now`` (``90s``, ``2h``, ``30d``)."""
    try:
        back = v.duration(0, float("inf"))(text)
    except v.Invalid:
        pass
    else:
        if back > _LONGEST_BACK:  # (it said "expected an ISO 8601 time or a duration", to a duration)
            raise v.Invalid("a duration back from now of at most 3650d (10 years), or an ISO 8601 time")
        return now - back
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise v.Invalid("an ISO 8601 time or a duration back from now such as 2h or 30d") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    seconds = moment.timestamp()
    try:  # (9999-12-31T23:59:59-05:00 is in the year 10000 in UTC: its text "10000-..." sorted first, so every
        datetime.datetime.fromtimestamp(seconds, datetime.UTC)  # dead letter was "since" it)
    except (ValueError, OverflowError):
        raise v.Invalid("a time within the years 1 to 9999 in UTC") from None
    return seconds


class Table:
    """The dead-letter table of one SQLite or PostgreSQL storage, for the admin commands."""

    def __init__(self, storage):
        self.storage = storage
        self.kind = storage.kind
        if self.kind == "sqlite":
            import sqlite3

            from lorrygate.decoding.timestamps import IsoTime

            self.conn = sqlite3.connect(storage.path, timeout=30)
            self.mark, self.table = "?", f'"{DEAD_LETTER_TABLE}"'
            iso = IsoTime()
            self.iso = lambda seconds: iso(int(seconds * 1e9))
        else:
            import psycopg

            from lorrygate.storage.postgresql import liveness

            self.conn = psycopg.connect(storage.url.raw, connect_timeout=10, **liveness(storage.url.raw))
            self.mark, self.table = "%s", f'public."{DEAD_LETTER_TABLE}"'
            self.iso = lambda seconds: datetime.datetime.fromtimestamp(seconds, datetime.UTC)

    def exists(self) -> bool:
        if self.kind == "sqlite":
            return self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (DEAD_LETTER_TABLE,)).fetchone() \
                is not None
        row = self.conn.execute("SELECT to_regclass(%s)", (f'public."{DEAD_LETTER_TABLE}"',)).fetchone()
        self.conn.commit()
        return row[0] is not None

    def prepare(self) -> None:
        """The columns of `ADDED_COLUMNS` (a table an earlier lorrygate made may lack them)."""
        if self.kind == "sqlite":
            columns = {row[1] for row in self.conn.execute(f"PRAGMA table_info({self.table})")}
            for column, kind, _ in ADDED_COLUMNS:
                if column not in columns:
                    self.conn.execute(f"ALTER TABLE {self.table} ADD COLUMN {column} {kind}")
        else:
            for column, _, kind in ADDED_COLUMNS:
                self.conn.execute(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {column} {kind}")
        self.conn.commit()

    def pages(self, filters: Filters, replayed: bool | None = None):
        """The matching dead letters, oldest first, `CHUNK` rows a query (by id, after the last one: a list or
        replay of millions holds a page, not all of them; rows marked or deleted between pages move none)."""
        clauses, params = filters.where(self.mark, self.iso)
        if replayed is not None:
            clauses.append("replayed IS NOT NULL" if replayed else "replayed IS NULL")
        clauses.append(f"id > {self.mark}")
        statement = f"SELECT {COLUMNS} FROM {self.table} WHERE {' AND '.join(clauses)} ORDER BY id LIMIT {CHUNK}"
        last = -1
        while True:
            rows = self.conn.execute(statement, (*params, last)).fetchall()
            if self.kind != "sqlite":
                self.conn.commit()
            if not rows:
                return
            last = rows[-1][0]
            page = [row for row in rows if filters.matches(row[3])]
            if page:
                yield page
            if len(rows) < CHUNK:
                return

    def id_range(self, filters: "Filters") -> tuple:
        """The smallest and largest id of the matching dead letters not yet replayed ((None, None): none)."""
        clauses, params = filters.where(self.mark, self.iso)
        clauses.append("replayed IS NULL")
        row = self.conn.execute(f"SELECT min(id), max(id) FROM {self.table} WHERE {' AND '.join(clauses)}",
                                params).fetchone()
        if self.kind != "sqlite":
            self.conn.commit()
        return row[0], row[1]

    def fail_again(self, refused: list) -> None:
        """Replayed dead letters that failed again before they reached a storage (a decoder, a transform):
        ``(id, DeadLetter)``, the new stage and reason, as a storage's own refusals of a replay get them; so that
        ``list`` tells why they fail with the configuration of the replay, not with the one they were kept by."""
        if self.kind == "sqlite":
            from lorrygate.storage.sqlite import SQLiteDialect

            SQLiteDialect(self.storage.path).fail_again(self.conn, DEAD_LETTER_TABLE, refused)
        else:
            from lorrygate.storage.postgresql import PostgresDialect

            PostgresDialect(self.storage.url.raw).fail_again(self.conn, DEAD_LETTER_TABLE, refused)
        self.conn.commit()

    def delete(self, ids: list) -> None:
        cursor = self.conn.cursor()
        cursor.executemany(f"DELETE FROM {self.table} WHERE id = {self.mark}", [(i,) for i in ids])
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


KINDS = ("sqlite", "postgresql", "crate")


def open_table(storage, reactor=None):
    """The dead-letter table of a SQLite or PostgreSQL storage (`Table`, its methods plain calls) or of a CrateDB
    storage (`lorrygate.storage.crate_dead_letters.CrateTable`, its methods coroutines: run them in a reactor)."""
    if storage.kind == "crate":
        from lorrygate.storage.crate_dead_letters import CrateTable

        return CrateTable(storage, reactor)
    return Table(storage)


async def pages(table, filters: Filters, replayed: bool | None = None):
    """A table's pages of matching dead letters (`Table.pages`; CrateDB's come from a coroutine)."""
    found = table.pages(filters, replayed)
    if hasattr(found, "__anext__"):
        async for page in found:
            yield page
    else:
        for page in found:
            yield page


async def settle(value):
    """What a table's method gave: awaited when it is a coroutine (CrateDB's), as it is otherwise."""
    return await value if inspect.isawaitable(value) else value


def received_seconds(value) -> float:
    """A dead letter's ``received`` as seconds since the epoch (ISO text in SQLite, a datetime in PostgreSQL)."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    text = str(value)
    whole, _, rest = text.rstrip("Z").partition(".")
    moment = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    return moment.timestamp() + (float("0." + rest) if rest else 0.0)


def tables_for(settings, name: str | None, err) -> list | None:
    names = [name] if name else [n for n, s in settings.storages.items() if s.kind in KINDS]
    chosen = []
    for storage_name in names:
        storage = settings.storages.get(storage_name)
        if storage is None or storage.kind not in KINDS:
            known = [n for n, s in settings.storages.items() if s.kind in KINDS]
            print(f"lorrygate dead-letters: {settings.source} has no SQLite, PostgreSQL or CrateDB storage "
                  f"{storage_name!r}{did_you_mean(storage_name, known)} ({', '.join(known) or 'none'}); only those "
                  "keep dead letters", file=err)
            return None
        chosen.append(storage)
    return chosen


def dead_letters_command(settings, args, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    now = time.time()
    times = {}
    for option, text in (("--since", args.since), ("--until", args.until), ("--topic", args.topic)):
        try:
            if option == "--topic":
                if text:
                    parse_filter(text)
            else:
                times[option] = parse_time(text, now) if text else None
        except (v.Invalid, ValueError) as exc:  # (it said "a filter", not which)
            print(f"lorrygate dead-letters: {option} {text!r}: expected {getattr(exc, 'expected', exc)}", file=err)
            return EXIT_USAGE
    filters = Filters(args.channel or "", args.stage or "", args.topic or "", times["--since"], times["--until"])
    storages = tables_for(settings, args.storage, err)
    if storages is None:
        return EXIT_USAGE
    if args.action == "purge" and not args.yes:
        print("lorrygate dead-letters purge: this deletes the matching dead letters and their payloads; "
              "add --yes to do it (lorrygate dead-letters list shows them)", file=err)
        return EXIT_USAGE
    if args.action == "replay":
        known = [channel.name for channel in settings.channels]
        if filters.channel and filters.channel not in known:
            print(f"lorrygate dead-letters replay: {settings.source} has no channel {filters.channel!r}"
                  f"{did_you_mean(filters.channel, known)} ({', '.join(known)}): a dead letter goes through its channel again, so those of a channel "
                  "no longer in the config cannot be replayed (list or purge them)", file=err)
            return EXIT_USAGE
        return _replay(settings, storages, filters, out, err)
    return _run(lambda reactor: _list_or_purge(storages, args, filters, reactor, out, err), err,
                in_reactor=any(storage.kind == "crate" for storage in storages))


async def _list_or_purge(storages, args, filters, reactor, out, err) -> int:
    """Each storage in turn; one that fails is reported, and the others are still listed or purged."""
    code = 0
    for storage in storages:
        try:
            table = open_table(storage, reactor)
        except Exception as exc:
            if not told(exc):
                raise
            print(f"lorrygate dead-letters {args.action}: cannot open storage {storage.name}: {exc}", file=err)
            code = EXIT_RUNTIME
            continue
        try:
            if not await settle(table.exists()):
                print(f"storage {storage.name}: no dead letters", file=out)
                continue
            await settle(table.prepare())
            if args.action == "list":
                listing = _Listing(args.limit)
                async for page in pages(table, filters):
                    listing.add(page)
                listing.show(storage.name, out)
            else:
                purged = 0
                async for page in pages(table, filters, True if args.replayed else None):
                    await settle(table.delete([row[0] for row in page]))  # (the next page is after its last id)
                    purged += len(page)
                print(f"storage {storage.name}: purged {purged} dead letter(s)", file=out)
        except Exception as exc:
            if not told(exc):
                raise
            print(f"lorrygate dead-letters {args.action}: {said(storage, exc)}", file=err)
            code = EXIT_RUNTIME
        finally:
            table.close()
    return code


def told(exc: Exception) -> bool:
    """Whether ``exc`` is a storage's own error, which its message explains (a server down, a refused
    statement), rather than a bug that needs its traceback."""
    from lorrygate.errors import LorrygateError

    return isinstance(exc, (LorrygateError, OSError)) or type(exc).__module__.split(".")[0] in (
        "psycopg", "sqlite3", "lorrygate")


def said(storage, exc: Exception) -> str:
    text = str(exc)
    return text if text.startswith(f"storage {storage.name}:") else f"storage {storage.name}: {text}"


def _run(work, err, in_reactor: bool) -> int:
    """``work(reactor)``, a coroutine: in a reactor when ``in_reactor`` (a CrateDB storage's client is
    Twisted's, and so is every storage's writer), else at once (SQLite and PostgreSQL are read with blocking
    calls)."""
    from twisted.internet.defer import Deferred

    if not in_reactor:
        done: list = []
        Deferred.fromCoroutine(work(None)).addBoth(done.append)
        if hasattr(done[0], "raiseException"):
            done[0].raiseException()
        return done[0]
    from twisted.internet import task

    code: list = []

    async def main(reactor):
        code.append(await work(reactor))

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
    except SystemExit as exc:
        if exc.code:
            print("lorrygate dead-letters: stopped by the error above; run it again (what a replay marked stays "
                  "marked)", file=err)
            return EXIT_RUNTIME
    return code[0]


class _Listing:
    """``list``: the dead letters counted as their pages come, by channel, stage and kind of reason, and the
    last ``limit`` of them kept to show."""

    def __init__(self, limit: int) -> None:
        self.total = self.waiting = 0
        self.kinds = Kinds()
        self.latest: collections.deque = collections.deque(maxlen=limit or 0)

    def add(self, rows) -> None:
        for row in rows:
            self.total += 1
            self.waiting += row[10] is None
            self.kinds.add((row[2], row[7], row[10] is not None), str(row[8]).split("\n")[0])
        self.latest.extend(rows)

    def show(self, name: str, out) -> None:
        print(f"storage {name}: {self.total} dead letter(s), {self.waiting} not replayed", file=out)
        self.kinds.show(lambda count, key, error: f"  {count:>7}  channel {key[0]}, {key[1]}"
                                                  f"{' (replayed)' if key[2] else ''}: {error[:160]}", out)
        for row in self.latest:
            payload = bytes(row[6] or b"")
            shown = payload[:80].decode("utf-8", "replace") + ("..." if len(payload) > 80 else "")
            typed = f" ({row[11]})" if row[11] else ""
            pairs = ", ".join(f"{name}={value}" for name, value in message_headers.from_json(row[12]))
            pairs = f" [{pairs[:120]}{'...' if len(pairs) > 120 else ''}]" if pairs else ""
            sent = f" (sent {row[13]})" if row[13] is not None else ""  # (the bus's time of the message)
            print(f"  #{row[0]} {row[1]}{sent} {row[3]!r} {row[7]}{typed}{pairs}: {shown!r}", file=out)


def _list(name: str, rows: list, out, limit: int) -> None:
    listing = _Listing(limit)
    listing.add(rows)
    listing.show(name, out)


def _replay(settings, storages, filters, out, err) -> int:
    outcome: dict = {}

    async def run(reactor) -> int:
        for storage in storages:
            try:
                outcome[storage.name] = await replay_storage(settings, storage, filters, reactor)
            except Exception as exc:
                if not told(exc):
                    raise
                print(f"lorrygate dead-letters replay: {said(storage, exc).rstrip('.')}; stopped: what was replayed is marked, "
                      "the rest stays; run it again", file=err)
                return EXIT_RUNTIME
        return 0

    code = _run(run, err, in_reactor=True)
    for name, counts in outcome.items():
        print(f"storage {name}: {counts['replayed']} replayed ({counts['rows']} rows), {counts['failing']} still "
              f"failing, {counts['unknown']} of channels not in the config", file=out)
        counts["reasons"].show(lambda count, _, reason: f"  {count:>7}  still failing: {reason[:160]}", out)
    return code


async def replay_storage(settings, storage, filters, reactor) -> dict:
    """Replay the matching dead letters of one storage; counts."""
    from lorrygate.model import Message
    from lorrygate.service.channel_service import make_router
    from lorrygate.service.storage_service import make_backend, storage_ddl
    from lorrygate.storage.batch import Batch, Collector

    table = open_table(storage, reactor)
    counts: dict = {"replayed": 0, "rows": 0, "failing": 0, "unknown": 0, "reasons": Kinds()}
    backends: dict = {}

    def still_failing(reason: str) -> None:
        counts["failing"] += 1
        counts["reasons"].add(None, reason)

    try:
        if not await settle(table.exists()):
            return counts
        await settle(table.prepare())
        channels = {channel.name: channel for channel in settings.channels}
        async for page in pages(table, filters, replayed=False):
            by_channel: dict = {}
            for row in page:
                channel = channels.get(row[2])
                if channel is None or channel.storage != storage.name:
                    counts["unknown"] += 1
                    continue
                if row[6] is None:  # (CrateDB: a dead letter too large for a request was kept without it)
                    still_failing("its payload was not kept (the dead letter's error says why); it cannot be "
                                  "replayed")
                    continue
                if row[7] == "size" and not row[6]:  # larger than its source's limit: never held, nothing to decode
                    still_failing("size: kept by reference (its size and SHA-256), not by copy: it cannot be "
                                  "replayed; have its sender send it again, within the limit the error names")
                    continue
                by_channel.setdefault(channel.name, []).append(row)
            for channel_name, chunk in by_channel.items():
                channel = channels[channel_name]
                collectors = tuple(Collector() for _ in channel.storages)
                router, decoders = make_router(settings, channel, collectors, reactor)
                for decoder in decoders:
                    if hasattr(decoder, "start"):
                        decoder.start()
                ids = {}
                try:
                    for row in chunk:
                        stream = f"dead-letter:{storage.name}:{row[0]}"
                        ids[stream] = row[0]
                        router(Message(row[3], bytes(row[6]), row[4] or 0, bool(row[5]), received_seconds(row[1]),
                                       row[3], position=(stream, 0, 1), content_type=row[11],
                                       headers=message_headers.from_json(row[12]),
                                       sent=received_seconds(row[13]) if row[13] is not None else None))
                    await router.settle()
                finally:
                    for decoder in decoders:
                        if hasattr(decoder, "stop"):
                            decoder.stop()
                failed = {dead.message.position[0] for dead in collectors[0].dead}
                for dead in collectors[0].dead:
                    still_failing(f"{dead.stage}: {dead.error.splitlines()[0] if dead.error else ''}")
                if collectors[0].dead:
                    await settle(table.fail_again([(ids[dead.message.position[0]], dead)
                                                   for dead in collectors[0].dead]))
                # the tee's storages first (with positions: written once however often this runs), then the
                # dead letters' own storage, which marks them replayed in the same transaction (CrateDB: after)
                for name, collector in reversed(list(zip(channel.storages, collectors))):
                    batch = Batch()
                    own = name == storage.name
                    stripped: dict = {}
                    for entry in collector.entries:
                        stream = entry.message.position[0]
                        if stream in failed:
                            continue
                        if own:
                            message = stripped.get(stream)
                            if message is None:
                                message = stripped[stream] = attrs.evolve(entry.message, position=None)
                                batch.replaying[id(message)] = ids[stream]
                            entry = attrs.evolve(entry, message=message)
                        batch.add(entry)
                    if batch.empty:
                        continue
                    backend = backends.get(name)
                    if backend is None:
                        backend = backends[name] = make_backend(settings.storages[name], reactor,
                                                                storage_ddl(settings, name))
                        await backend.start()
                    await backend.write(batch)
                    if not own:
                        continue
                    again = batch.refused_again()
                    for _, dead in again:
                        still_failing(f"{dead.stage}: {dead.error.splitlines()[0] if dead.error else ''}")
                    kept = {key for key, _ in again}
                    replayed = sorted(key for key in batch.replaying.values() if key not in kept)
                    counts["replayed"] += len(replayed)
                    counts["rows"] += batch.rows - batch.refused_rows
                    if storage.kind == "crate":
                        await table.fail_again(again)
                        await table.mark_replayed(replayed, reactor.seconds())
    finally:
        table.close()
        for backend in backends.values():
            await backend.stop()
    return counts
