"""
``lorrygate spool list|drain|discard``: what an operator does with a spool
that the gateway refuses to drain (it was written for another target), or
with any spool while the gateway is stopped.

- ``list``: every spool directory of the data directory, the target its
  batches were written for, how many batches and bytes, and whether that is
  the target the config's storage of that name writes to.
- ``drain NAME``: write the batches of spool NAME into the configured storage
  NAME, oldest first, deleting each file once it is committed. A spool
  written for another target needs ``--adopt``: the operator says these rows
  belong in the configured database.
- ``discard NAME --yes``: delete the spooled batches of NAME.

Each of them holds the data directory's lock, so none runs beside a gateway
that uses the spool.
"""

import os
import sys
import time

from lorrygate.errors import LorrygateError
from lorrygate.service.locks import InstanceLock
from lorrygate.storage.spool import IDENTITY, read_identity, spooled_files, write_identity

EXIT_USAGE = 2
EXIT_RUNTIME = 1


def _spool_root(settings) -> str:
    return os.path.join(settings.gateway.data_dir, "spool")


def describe_spools(settings) -> list:
    """One dict per spool directory: name, directory, recorded and configured targets, batches, bytes, oldest."""
    root = _spool_root(settings)
    names = sorted(set(os.listdir(root)) if os.path.isdir(root) else set())
    found = []
    for name in names:
        directory = os.path.join(root, name)
        if not os.path.isdir(directory):
            continue
        files = spooled_files(directory)
        sizes = [os.path.getsize(os.path.join(directory, f)) for f in files]
        oldest = min((os.path.getmtime(os.path.join(directory, f)) for f in files), default=None)
        recorded = read_identity(directory)
        storage = settings.storages.get(name)
        configured = storage.url.target if storage is not None and storage.spool else None
        found.append({
            "name": name,
            "directory": directory,
            "recorded": recorded.get("target") if recorded else None,
            "configured": configured,
            "matches": recorded is not None and configured is not None and recorded.get("target") == configured,
            "batches": len(files),
            "bytes": sum(sizes),
            "oldest_age": None if oldest is None else round(time.time() - oldest, 1),
        })
    return found


def spool_command(settings, args, out=None) -> int:
    out = out or sys.stdout
    if args.action == "list":
        spools = describe_spools(settings)
        if not spools:
            print(f"no spools in {_spool_root(settings)}", file=out)
        for spool in spools:
            state = ("matches the configured storage" if spool["matches"]
                     else "NO configured storage of this name" if spool["configured"] is None
                     else f"DIFFERS from the configured storage ({spool['configured']})")
            age = "" if spool["oldest_age"] is None else f", oldest {spool['oldest_age']} s"
            print(f"{spool['name']}: {spool['batches']} batch(es), {spool['bytes']} bytes{age} in {spool['directory']}\n"
                  f"  written for {spool['recorded'] or 'an unknown target (no ' + IDENTITY + ')'}: {state}", file=out)
        return 0
    if not args.storage:
        print(f"lorrygate spool {args.action}: name the storage whose spool it is (lorrygate spool list shows them)",
              file=sys.stderr)
        return EXIT_USAGE
    directory = os.path.join(_spool_root(settings), args.storage)
    if not os.path.isdir(directory):
        print(f"lorrygate spool {args.action}: no spool {directory}", file=sys.stderr)
        return EXIT_USAGE
    lock = InstanceLock(settings.gateway.data_dir, settings.source)
    try:
        lock.acquire_data_dir()
    except LorrygateError as exc:
        print(f"lorrygate spool {args.action}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        if args.action == "discard":
            return _discard(directory, args.yes, out)
        return _drain(settings, args.storage, directory, args.adopt, out)
    finally:
        lock.release()


def _discard(directory: str, yes: bool, out) -> int:
    files = spooled_files(directory)
    if not yes:
        print(f"lorrygate spool discard: this deletes {len(files)} spooled batch(es) in {directory}, rows that were "
              "acknowledged to the broker and exist nowhere else; add --yes to do it", file=sys.stderr)
        return EXIT_USAGE
    for name in files:
        os.unlink(os.path.join(directory, name))
    try:
        os.unlink(os.path.join(directory, IDENTITY))
    except FileNotFoundError:
        pass
    print(f"discarded {len(files)} batch(es) from {directory}", file=out)
    return 0


def _drain(settings, name: str, directory: str, adopt: bool, out) -> int:
    storage = settings.storages.get(name)
    if storage is None or not storage.spool:
        print(f"lorrygate spool drain: {settings.source} has no storage {name!r} with a spool to drain into",
              file=sys.stderr)
        return EXIT_USAGE
    recorded = read_identity(directory)
    if (recorded is None or recorded.get("target") != storage.url.target) and spooled_files(directory):
        if not adopt:
            was = recorded.get("target") if recorded else "an unknown target"
            print(f"lorrygate spool drain: {directory} was written for {was}, storage {name} writes to "
                  f"{storage.url.target}; add --adopt to write the batches there anyway", file=sys.stderr)
            return EXIT_USAGE
        write_identity(directory, storage.kind, storage.url.target)
    from twisted.internet import task

    outcome = {}


    async def drain(reactor):
        from lorrygate.service.storage_service import make_backend, storage_ddl
        from lorrygate.storage.spool import Spool

        backend = make_backend(storage, reactor, storage_ddl(settings, name))
        spool = Spool(directory, reactor, storage.spool_max, storage.kind, storage.url.target)
        await spool.start()
        try:
            await backend.start()
            done = 0
            while True:
                found = await spool.oldest()
                if found is None:
                    break
                path, batch = found
                await backend.write(batch)
                await spool.remove(path)
                done += 1
            outcome["done"] = done
        finally:
            await backend.stop()
            spool.stop()

    from twisted.internet.defer import Deferred

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(drain(reactor)))
    except SystemExit as exc:
        if exc.code:
            print(f"lorrygate spool drain: stopped after {outcome.get('done', 0)} batch(es); the rest stays in "
                  f"{directory}", file=sys.stderr)
            return EXIT_RUNTIME
    print(f"drained {outcome.get('done', 0)} batch(es) from {directory} into {storage.url}", file=out)
    return 0

