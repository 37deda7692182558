"""
Paths in a config file are relative to the folder of that file, everywhere
(``data_dir``, ``strategies``, SQLite URLs, ``ddl = @file``, codec files, TLS
files, the control socket, a hook command's program), the way ``${FILE:...}``
always was: ``cd / && lorrygate check -c /srv/lg/fleet.ini`` reads the same
files as a run from ``/srv/lg``. Text given without a file (``lorrygate
launch``, `lorrygate.config.loads` without ``base_dir``) is relative to the
working directory.

Before 0.1.0 these paths were relative to the working directory. So that an
upgrade does not silently leave a spool (batches already acknowledged to the
broker) or a database behind, a relative ``data_dir`` or SQLite path that
names nothing next to the config while the working directory holds
lorrygate's files under it is a configuration problem that says where each
is.
"""

import os
import re
import shlex

#: keys whose value is a path, by section kind
PATH_KEYS = {
    "lorrygate": ("data_dir", "strategies"),
    "broker": ("tls_ca", "tls_cert", "tls_key"),
    "storage": ("tls_ca", "tls_cert", "tls_key"),
    "decoder": ("file",),
    "source": ("root", "path", "tls_cert", "tls_key"),
}


#: keys whose value names a file the gateway reads as part of its configuration, by section kind
READ_KEYS = {
    "broker": ("tls_ca", "tls_cert", "tls_key"),
    "storage": ("tls_ca", "tls_cert", "tls_key"),
    "decoder": ("file",),
    "source": ("tls_cert", "tls_key"),
}
_FILE_REFERENCE = re.compile(r"\$\{FILE:([^}]*)\}")


def files_read(kind: str, key: str, raw: str, resolved: str, base_dir: str) -> list:
    """The absolute paths of the files that a value makes the gateway read as configuration: its ``${FILE:path}``
    references, a TLS or codec file (``resolved``: the value with its paths resolved), a ``ddl = @file``."""
    found = [os.path.abspath(resolve(name.strip(), base_dir)) for name in _FILE_REFERENCE.findall(raw) if name.strip()]
    text = resolved.strip()
    if key in READ_KEYS.get(kind, ()) and text:
        found.append(os.path.abspath(text))
    elif key == "ddl" and text.startswith("@") and text[1:].strip():
        found.append(os.path.abspath(text[1:].strip()))
    return found


def resolve(path: str, base_dir: str) -> str:
    if not path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base_dir, path))


def resolve_value(kind: str, key: str, value: str, base_dir: str) -> str:
    """A raw config value with its relative paths made absolute against ``base_dir``."""
    text = value.strip()
    if key in PATH_KEYS.get(kind, ()):
        return resolve(text, base_dir)
    if kind == "storage" and key == "url" and text.startswith("sqlite:///") and len(text) > len("sqlite:///"):
        return "sqlite:///" + resolve(text[len("sqlite:///"):], base_dir)
    if key == "ddl" and text.startswith("@"):
        return "@" + resolve(text[1:].strip(), base_dir)
    if kind == "lorrygate" and key == "control" and text.startswith("unix:"):
        return "unix:" + resolve(text[5:], base_dir)
    if kind == "hook" and key == "command":
        try:
            words = shlex.split(text)
        except ValueError:
            return value  # the validator says what is wrong
        if words and "/" in words[0] and not os.path.isabs(words[0]):
            return shlex.join([resolve(words[0], base_dir)] + words[1:])
    return value


def moved(given: str, base_dir: str, what: str) -> str | None:
    """For a relative ``data_dir`` (what = "data_dir") or SQLite file (what = "sqlite"): why it cannot be
    used as written, when lorrygate's files are under the working directory and not next to the config."""
    if not given or os.path.isabs(given):
        return None
    here = os.path.normpath(os.path.join(base_dir, given))
    there = os.path.abspath(given)
    if here == there or os.path.exists(here):
        return None
    if what == "sqlite":
        found = os.path.isfile(there)
    else:
        # lorrygate's own files, not any directory of that name (/var has a spool too)
        import glob

        found = os.path.exists(os.path.join(there, "lorrygate.lock")) or bool(
            glob.glob(os.path.join(glob.escape(there), "spool", "*", "target.json")))
    if not found:
        return None
    return (f"{given!r} is relative to the config file's folder since lorrygate 0.1.0, so {here}, which does not "
            f"exist; {there} (relative to the working directory, as before) holds lorrygate's files: move them to "
            f"{here}, or write the absolute path")


#: top-level directories a relative SQLite path hardly means to name below the config's folder
_ROOT_DIRS = ("tmp", "srv", "opt", "home", "mnt", "media", "run", "root")


def root_meant(given: str, base_dir: str) -> str | None:
    """For ``sqlite:///tmp/x.sqlite`` (three slashes: the relative path ``tmp/x.sqlite``, as SQLAlchemy reads
    it too): a warning that names the file it is and the URL of ``/tmp/x.sqlite``, when ``tmp`` is a top-level
    directory and not one below ``base_dir``; else None."""
    if not given or os.path.isabs(given):
        return None
    first = given.split("/", 1)[0]
    if first not in _ROOT_DIRS or not os.path.isdir("/" + first) or os.path.exists(os.path.join(base_dir, first)):
        return None
    return (f"sqlite:///{given} is the file {os.path.normpath(os.path.join(base_dir, given))} (three slashes: a path "
            f"relative to {base_dir}); for /{given}, write sqlite:////{given}")
