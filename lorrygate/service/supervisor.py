"""
Running a gateway, and replacing it when its configuration changes.

``lorrygate -c FILE --reload`` watches the config file, the strategies
directory and the files the config reads (codec, DDL, TLS files, a dataflow's
modules, ``${FILE:path}``; watchdog); SIGHUP asks for the same in production. A change is
validated first: an invalid edit is reported and the running gateway stays.
A valid one is applied part by part (`Gateway.reconfigure`): channels and
storages that did not change keep running, their sessions untouched; a
changed channel stops the way SIGTERM would stop it (everything it delivered
is committed and acknowledged, then it disconnects) and starts again, resuming
its persistent session: nothing is dropped, nothing written twice; messages
published during the switch wait in the broker. A new configuration that
fails to start is rolled back, and the running one stays. "reloaded" is
logged once the restarted channels have subscribed.
"""

import os
import signal
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from lorrygate.errors import ConfigError
from lorrygate.service import systemd


@attrs.define(eq=False)
class Supervisor:
    reactor: Any
    settings: Any
    config_path: str | None = None
    _gateway: Any = None
    _observer: Any = None
    _handler: Any = None
    #: directory -> watchdog's watch of it: the strategies directory, its helper packages, the folders of the
    #: files the configuration reads
    _code_watches: dict = attrs.Factory(dict)
    #: the folders whose code and config files a change of reloads (`is_input`), and the files the config reads
    _code_folders: frozenset = frozenset()
    _files: frozenset = frozenset()
    _pending: Any = None
    _busy: bool = False

    log = Logger()

    async def start(self) -> None:
        from lorrygate.service.gateway import Gateway

        self._gateway = Gateway.from_settings(self.settings, self.reactor)
        await self._gateway.start()

    async def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer = None
        if self._gateway is not None:
            gateway, self._gateway = self._gateway, None
            await gateway.stop()

    def watch(self) -> None:
        """Reload on changes to the config file or the strategies directory."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        supervisor = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.is_directory or event.event_type not in ("modified", "created", "moved", "deleted"):
                    return
                path = getattr(event, "dest_path", "") or event.src_path
                if supervisor.is_input(path):
                    supervisor.reactor.callFromThread(supervisor.request, f"{os.path.basename(path)} changed")

        assert self.config_path is not None, "watching needs a config file"
        observer = Observer()
        self._handler = Handler()
        observer.schedule(self._handler, os.path.dirname(os.path.abspath(self.config_path)), recursive=False)
        observer.daemon = True
        self._observer = observer
        self._watch_code()  # (before the start: `is_input` knows the folders from the first event on)
        observer.start()
        self.log.info("reloading on changes to {config}, {strategies} and the {files} other file(s) it reads",
                      config=self.config_path, strategies=self.settings.gateway.strategies,
                      files=len(self.settings.files))

    def _watch_code(self) -> None:
        """Watch the strategies directory and its helper packages (``_lib/``: not the whole tree, which may hold a
        data directory that every commit changes), and the folders of the files the configuration reads
        (`Settings.files`: a codec file, a DDL file, a dataflow's module, a TLS file, a ``${FILE:path}``
        elsewhere; their edits were seen by SIGHUP only), again after a reload: a package made since, or another
        directory or file, is watched too."""
        from lorrygate.config.code_identity import helper_packages

        strategies = os.path.abspath(self.settings.gateway.strategies)
        config_folder = os.path.dirname(os.path.abspath(self.config_path or "."))  # (watched already, for good)
        code = [strategies, *helper_packages(strategies)] if os.path.isdir(strategies) else []
        self._code_folders = frozenset([config_folder, *code])
        self._files = frozenset(self.settings.files)
        folders = {os.path.dirname(path) for path in self._files}
        wanted = [d for d in dict.fromkeys([*code, *sorted(folders)]) if d != config_folder and os.path.isdir(d)]
        for directory in [d for d in self._code_watches if d not in wanted]:
            self._observer.unschedule(self._code_watches.pop(directory))
        for directory in [d for d in wanted if d not in self._code_watches]:
            self._code_watches[directory] = self._observer.schedule(self._handler, directory, recursive=False)

    def is_input(self, path: str) -> bool:
        """Whether a change of ``path`` may change the configuration: a file it reads (`Settings.files`, whatever
        its name), or a config, Python, JavaScript or SQL file of the config's folder, the strategies directory
        or a helper package (another file in a TLS file's folder, ``/etc/ssl/certs``, is none)."""
        path = os.path.abspath(path)
        return path in self._files or (os.path.dirname(path) in self._code_folders
                                       and path.endswith((".ini", ".py", ".js", ".sql")))

    def listen_for_sighup(self) -> None:
        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.request, "SIGHUP"))

    def request(self, why: str) -> None:
        """Reload soon (edits come in bursts: wait for them to settle)."""
        if self._pending is not None and self._pending.active():
            self._pending.reset(0.3)
            return
        self._pending = self.reactor.callLater(0.3, lambda: Deferred.fromCoroutine(self.reload(why)))

    async def reload(self, why: str) -> None:
        from lorrygate.config import load

        if self._busy:
            self.request(why)
            return
        assert self.config_path is not None, "reloading needs a config file"
        self._busy = True
        try:
            try:
                settings = load(self.config_path)
            except ConfigError as exc:
                self._count(failed=True)
                self.log.error("{why}: the new configuration is invalid, the running one stays:\n{problems}",
                               why=why, problems=exc.render())
                return
            self.log.info("{why}: the new configuration is valid; switching", why=why)
            for warning in settings.warnings:
                self.log.warn("{warning}", warning=warning, event="config_warning")
            systemd.notify("RELOADING=1")
            gateway = self._gateway
            if gateway is None:
                return  # stopping
            try:
                restarted = await gateway.reconfigure(settings)
            except Exception as exc:
                self._count(failed=True)
                self.log.error("{why}: the new configuration could not start, the running one stays: {error}",
                               why=why, error=str(exc))
                systemd.notify("READY=1\nSTATUS=reload failed, the running configuration stays")
                return
            self.settings = settings
            if self._observer is not None:
                self._watch_code()
            self._count(failed=False)
            count = len(restarted)

            def reloaded(_):
                self.log.info("reloaded: {channels} channel(s) running, {restarted} of them (re)started and "
                              "subscribed", channels=len(settings.channels), restarted=count)
                systemd.notify("READY=1\nSTATUS=running")

            self._gateway.when_ready(restarted).addCallback(reloaded).addErrback(lambda _: None)
        finally:
            self._busy = False

    def _count(self, failed: bool) -> None:
        """Count a reload on the gateway (status and metrics read it there)."""
        if self._gateway is not None:
            if failed:
                self._gateway.failed_reloads += 1
            else:
                self._gateway.reloads += 1
