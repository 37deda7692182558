"""
The per-network layout's views where they are made beside the writes (PostgreSQL).

A PostgreSQL view lists its columns when it is made (the SQL standard
expands ``*`` once), it keeps a column it uses from changing type, and a
transaction that makes 10,000 views runs out of the server's lock table. So
the views are derived state: made in rounds of `VIEW_ROUND`, each a
transaction of its own on the storage's writer thread, between the writes;
the rows and their acknowledgements never wait for them.

- Each connection first looks at what the database has (`ViewRounds.look`, on
  a connection of its own beside the writer's, so that the writes go on
  meanwhile): views lacking a column of their shared table (a stop during
  the rounds) and views missing for addresses with rows (a stop before
  they were made) are queued (`ViewRounds._reconcile`).
- After a commit, the views its rows want, and every view of a shared table
  that got a column, are queued (`ViewRounds.committed`).
- A column that must widen drops its table's views first, in rounds too,
  and queues them again (`ViewRounds.drop`); the storage writes the batch
  again (`ViewsInTheWay`).

Measured, PostgreSQL 15, 10,000 addresses of one network (one row each, committed in 0.3 s): their views
in 100 rounds, 3.3 s (a statement each: 6.0 s), the longest round 123 ms; a new connection's look 0.45 s
(from ``information_schema`` and the views' definitions: 1.2 s); a new column's views made again in
4.5 s; a widening's drop 1.9 s (the batch waits; a DROP each: 4.1 s), and the views back in 4.1 s.
"""

from typing import Any

import attrs
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from lorrygate.errors import StorageError
from lorrygate.model import TableName
from lorrygate.storage.shared_layout import ADDRESS_COLUMNS

#: views made (or dropped) at most in one transaction and one round trip: ~0.33 ms a view, so a round holds
#: the writer ~35 ms (up to ~120 ms measured)
VIEW_ROUND = 100


class ViewsInTheWay(Exception):
    """PostgreSQL refused to widen a column of a shared table because views use it."""

    def __init__(self, table, error):
        super().__init__(error)
        self.table = table


@attrs.define(eq=False)
class ViewRounds:
    #: the `lorrygate.storage.sqlstorage.SqlStorage` whose connection and writer thread the rounds use
    storage: Any
    #: views to make or make again: physical name -> (per-address TableName, shared TableName)
    queue: dict = attrs.Factory(dict)
    #: the views over each shared table: its physical name -> {view's physical name: as in `queue`}
    _of: dict = attrs.Factory(dict)
    #: shared tables (physical names) whose column a view of the user's keeps from widening
    _foreign: set = attrs.Factory(set)
    #: whether this connection looked at what the database has, and whether a round is queued
    _reconciled: bool = False
    _scheduled: bool = False
    #: what a look beside the writer found (`look`), for the next round to take in; whether one runs
    _found: Any = None
    _looking: bool = False

    log = Logger()

    def connected(self) -> None:
        """A new connection: look at the database again before the next round."""
        self._reconciled = False
        self._foreign.clear()

    def to_make(self) -> int | None:
        """Views queued (None: not looked yet), for the status."""
        return len(self.queue) if self._reconciled else None

    def foreign(self, table: str) -> bool:
        return table in self._foreign

    # -- on the reactor thread ---------------------------------------------------------------------------

    def after(self, result):
        """After a write (its Deferred's callback, before the acknowledgements): a round, if views wait."""
        self.schedule()
        return result

    def schedule(self) -> None:
        """Queue a round on the writer thread, unless one is queued or nothing waits; before the first of a
        connection, look at what the database has beside it."""
        storage = self.storage
        if not storage._views_beside or self._scheduled or storage._pool is None:
            return
        if not self._reconciled and self._found is None:
            if not self._looking:
                self._looking = True
                pool = storage.reactor.getThreadPool()
                deferToThreadPool(storage.reactor, pool, self.look).addCallbacks(self._looked, self._look_failed)
            return
        if self._reconciled and not self.queue:
            return
        self._scheduled = True

        def done(more):
            self._scheduled = False
            if more:
                self.schedule()

        def failed(failure):
            self._scheduled = False
            self.log.info("storage {storage}: making views failed ({error}); the next write tries again",
                          storage=storage.name, error=failure.getErrorMessage())

        storage._call(self.round).addCallbacks(done, failed)

    def _looked(self, found) -> None:
        self._looking = False
        self._found = found
        self.schedule()

    def _look_failed(self, failure) -> None:
        self._looking = False
        self.log.info("storage {storage}: looking at the views failed ({error}); the next write tries again",
                      storage=self.storage.name, error=failure.getErrorMessage())

    # -- on a thread of the reactor's pool ---------------------------------------------------------------

    def look(self, conn=None) -> tuple:
        """What the database has: the layout's views (`shared_views`), and each shared table with the addresses
        that have rows in it. On a connection of its own (10,000 views: ~0.4 s that the writer does not
        wait for), or ``conn``."""
        dialect = self.storage.dialect
        aside = conn is None
        if aside:
            conn = dialect.connect_aside()
        try:
            found = (dialect.shared_views(conn),
                     [(shared, dialect.addresses(conn, shared)) for shared in dialect.shared_tables(conn)])
            if not aside:
                dialect.commit(conn)
            return found
        except Exception:
            if not aside:
                dialect.rollback(conn)
            raise
        finally:
            if aside:
                conn.close()

    # -- on the writer thread ----------------------------------------------------------------------------

    def round(self) -> bool:
        """Make (or make again) up to `VIEW_ROUND` queued views in a transaction; True while more wait."""
        storage = self.storage
        conn = storage._conn
        if conn is None:
            return False  # the next write connects, and schedules a round
        dialect = storage.dialect
        chunk: list = []
        try:
            if not self._reconciled:
                storage._read_columns()
                found, self._found = self._found, None
                self._reconcile(self.look(conn) if found is None else found)
            chunk = []
            for view, entry in list(self.queue.items())[:VIEW_ROUND]:
                if view in storage._columns and view not in storage._views:
                    # a table, or a view of the user's, had the name when this connection looked
                    del self.queue[view]
                    storage.refuse_view(view, dialect.physical(entry[1]), entry[0].table)
                else:
                    chunk.append((view, entry))
            if not chunk:
                return bool(self.queue)
            columns: dict = {}
            for _, (_, shared) in chunk:
                if shared not in columns:
                    columns[shared] = dialect.view_columns(conn, shared)
            dialect.make_views(conn, [(view, shared, columns[shared]) for _, (view, shared) in chunk])
            dialect.commit(conn)
            made = chunk
        except Exception as exc:
            dialect.rollback(conn)
            if dialect.transient(exc) or not chunk:
                storage._reset_after(exc)
                raise
            made = self._one_by_one(conn, chunk)
        for view, (table, shared) in made:
            self.queue.pop(view, None)
            storage._views.add(view)
            self._of.setdefault(dialect.physical(shared), {})[view] = (table, shared)
        if made:
            self.log.info("storage {storage}: made {count} view(s) over shared tables, such as {view} ({left} to "
                          "make)", storage=storage.name, count=len(made), view=made[0][0], left=len(self.queue))
        return bool(self.queue)

    def _one_by_one(self, conn, chunk: list) -> list:
        """A round the database refused: each view in a savepoint. A view whose name another object has (a
        table, a view of other columns) is refused for good, with the reason; one refused otherwise waits
        for its address's next rows."""
        storage = self.storage
        dialect = storage.dialect
        made = []
        try:
            for view, (table, shared) in chunk:
                dialect.execute(conn, "SAVEPOINT lorrygate_view")
                try:
                    dialect.make_views(conn, [(table, shared, dialect.view_columns(conn, shared))])
                except Exception as exc:
                    if dialect.transient(exc):
                        raise
                    dialect.execute(conn, "ROLLBACK TO SAVEPOINT lorrygate_view")
                    self.queue.pop(view, None)
                    reason = f"{dialect.name} refused it: {dialect.explain(exc)}"
                    if dialect.name_taken(exc):
                        storage.refuse_view(view, dialect.physical(shared), table.table, reason)
                    else:
                        self.log.warn("storage {storage}: no view {view} yet: {reason}; the address's next rows "
                                      "try again", storage=storage.name, view=view, reason=reason)
                    continue
                dialect.execute(conn, "RELEASE SAVEPOINT lorrygate_view")
                made.append((view, (table, shared)))
            dialect.commit(conn)
        except Exception as exc:
            dialect.rollback(conn)
            storage._reset_after(exc)
            raise
        return made

    def _reconcile(self, found: tuple) -> None:
        """Take in what a look found: views lacking a column of their shared table, and those missing for
        addresses with rows, are queued; of those the rows of this connection wanted meanwhile, the views
        that exist are not."""
        storage = self.storage
        physical = storage.dialect.physical
        known = storage._columns
        views: set = set()
        self._of = {}
        queue = self.queue
        existing, addresses = found
        for view, shared in existing:
            name, table = physical(view), physical(shared)
            views.add(name)
            self._of.setdefault(table, {})[name] = (view, shared)
            wanted = {column for column in known.get(table) or () if column not in ADDRESS_COLUMNS}
            if set(known.get(name) or ()) != wanted:
                queue[name] = (view, shared)  # it lacks a column the table got after it was made
            else:
                queue.pop(name, None)
        for shared, names in addresses:
            for address in names:
                view = TableName(shared.schema, address)
                name = physical(view)
                if name in views or name in queue or name in storage.refused_views:
                    continue
                if name in known:
                    storage.refuse_view(name, physical(shared), address)
                else:
                    queue[name] = (view, shared)
        storage._views = views
        self._reconciled = True

    def committed(self, wanted: dict, added: dict) -> None:
        """After a commit: the views its rows want, and the views of the shared tables that got a column."""
        queue = self.queue
        for view, entry in wanted.items():
            queue.setdefault(view, entry)
        for table in added:
            for view, entry in (self._of.get(table) or {}).items():
                queue.setdefault(view, entry)

    def drop(self, table, error: str) -> None:
        """PostgreSQL refused to widen a column of the shared ``table`` that views use: the layout's views over
        it go, in transactions of `VIEW_ROUND`, and are queued to come back (a query of them fails meanwhile).
        When none of them is left, a view of the user's keeps the column as it is: the rows that need it
        become dead letters with PostgreSQL's reason."""
        storage = self.storage
        conn = storage._conn
        dialect = storage.dialect
        shared_name = dialect.physical(table)
        dropped = 0
        try:
            views = dialect.shared_views(conn, table)
            dialect.commit(conn)
            for start in range(0, len(views), VIEW_ROUND):
                chunk = views[start:start + VIEW_ROUND]
                dialect.drop_views(conn, [view for view, _ in chunk])
                dialect.commit(conn)
                for view, shared in chunk:
                    name = dialect.physical(view)
                    if storage._views is not None:
                        storage._views.discard(name)
                    storage._columns.pop(name, None)  # (gone: its name is free for the view again)
                    self._of.get(shared_name, {}).pop(name, None)
                    self.queue[name] = (view, shared)
                dropped += len(chunk)
        except Exception as exc:
            dialect.rollback(conn)
            storage._reset_after(exc)
            raise StorageError(f"storage {storage.name}: cannot drop the views over {shared_name} to widen a column "
                               f"({dropped} dropped): {exc}") from None
        if dropped:
            self.log.info("storage {storage}: {error}: dropped the {count} view(s) over {table} to widen the column; "
                          "they are made again beside the writes", storage=storage.name, error=error, count=dropped,
                          table=shared_name)
        else:
            self._foreign.add(shared_name)
            self.log.warn("storage {storage}: {error}: a view that is not this layout's uses a column of {table} that "
                          "must widen; the rows that need it become dead letters until that view is dropped",
                          storage=storage.name, error=error, table=shared_name)
