"""
The process's limit of open files, raised from its soft to its hard value at the start.

systemd starts a service with a soft limit of 1,024 open files (the hard
limit is 524,288 on current systems). The gateway's open files are few
(SQLite keeps one database file open, however many tables), but the
connections of HTTP clients, a metrics scraper, brokers, PostgreSQL and the
spool's files share that soft limit: at it, a spool file could not be
written, a WAL not be checkpointed and a broker not be connected to again.
systemd.exec(5) asks a program that needs more to raise its soft limit
itself, which is safe for programs that never use ``select()`` on them
(the reactor is epoll; psycopg waits with poll or epoll).
"""

import resource

#: the soft limit taken when the hard limit is unlimited (Linux's ``fs.nr_open`` default)
UNLIMITED = 1 << 20


def raise_open_files(resources=resource) -> tuple:
    """Raise the soft limit of open files to the hard one; ``(before, after)``, equal when nothing changed."""
    soft, hard = resources.getrlimit(resources.RLIMIT_NOFILE)
    wanted = UNLIMITED if hard == resources.RLIM_INFINITY else hard
    if soft != resources.RLIM_INFINITY and soft < wanted:
        try:
            resources.setrlimit(resources.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, wanted
    return soft, soft
