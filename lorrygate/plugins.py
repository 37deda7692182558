"""
User extensions: Python modules dropped into a directory (``strategies/``)
and packages that register an entry point.

Every ``*.py`` file in the directory is imported at start-up, before the
reactor runs. Each class in it that declares ``@implementer(IStrategy)`` is
checked against the interface and registered under its ``name`` attribute.
An import error, a class that misses part of the interface, or a name used
twice stops start-up with a `ConfigProblem` naming the file, the class and
what is wrong. Installed packages can register strategies in the entry-point
group ``lorrygate.strategies`` (``name = module:Class``).
"""

import importlib.metadata
import importlib.util
import inspect
import os
import sys
import traceback
from typing import Any

from zope.interface.exceptions import Invalid as InterfaceInvalid
from zope.interface.verify import verifyClass

from lorrygate.errors import ConfigProblem

ENTRY_POINT_GROUPS = {"strategy": "lorrygate.strategies", "decoder": "lorrygate.decoders"}
#: what the problem of a drop-in module that did not import expected
IMPORTS_CLEANLY = "a module that imports cleanly"


def _import_problem(path: str, exc: BaseException) -> str:
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == path]
    where = f" at line {frames[-1].lineno}" if frames else ""
    if isinstance(exc, SyntaxError) and exc.lineno:
        where = f" at line {exc.lineno}"
    if isinstance(exc, SystemExit):
        return (f"SystemExit{where}: sys.exit({exc.code!r}) as it was imported, which would end the gateway (a "
                "script's own run belongs under if __name__ == '__main__':)")
    return f"{type(exc).__name__}{where}: {exc}"


def load_modules(directory: str, problems: list) -> list:
    """Import every ``*.py`` in ``directory`` once; return ``[(path, module)]``.

    A module whose name starts with ``_`` is no drop-in but a helper that the drop-ins import by its name
    (``from _common import scale``), and so is a helper package (``_lib/`` with its ``__init__.py``): the folder
    is put at the end of ``sys.path`` (an installed module of the same name comes first), and every module of
    the folder that Python keeps is forgotten first, so that a reload reads an edited helper again, not the copy
    Python keeps. That is every one, not only those the drop-ins imported at the last load: a hook's or a graph's
    ``module:function`` into a helper package (``_lib.inventory:register``), imported when the config is read, and
    a helper a drop-in imports only as it runs, were kept across reloads in their first text. A directory put on
    the path by an earlier load that named another one is taken off, and its modules forgotten."""
    modules: list = []
    folder = os.path.abspath(directory)
    for before in [*_ON_PATH, folder]:
        forget_modules_of(before)
    for before in [path for path in _ON_PATH if path != folder]:  # (a reload with another strategies directory)
        _ON_PATH.remove(before)
        if before in sys.path:
            sys.path.remove(before)
    if not os.path.isdir(directory):
        return modules
    if folder not in sys.path:
        sys.path.append(folder)
        _ON_PATH.append(folder)
    _load(folder, modules, problems)
    return modules


#: the strategies directories that `load_modules` put on ``sys.path``: a reload that names another one takes the
#: earlier one off, and forgets its modules (its helpers came first for ``import _naming``, edited or not)
_ON_PATH: list = []


def forget_modules_of(folder: str) -> None:
    """Drop from ``sys.modules`` the modules that were imported from ``folder`` as an entry of ``sys.path``:
    ``name`` from ``<folder>/name.py``, ``name.sub`` from ``<folder>/name/sub.py`` (lorrygate's own excepted). A
    module that only lies below it is kept: with ``strategies = /opt``, the packages of ``/opt/venv`` were
    imported from their site-packages, and forgetting them would import them twice."""
    folder = os.path.abspath(folder)
    for name, module in list(sys.modules.items()):
        top = name.partition(".")[0]
        path = _file_of(module)
        if not name.startswith("lorrygate") and path and (
                path == os.path.join(folder, top + ".py") or path.startswith(os.path.join(folder, top) + os.sep)):
            sys.modules.pop(name, None)


def _file_of(module) -> str:
    try:
        path = getattr(module, "__file__", None)
    except Exception:  # (a module object of a third party whose attribute access raises)
        return ""
    return os.path.abspath(path) if isinstance(path, str) else ""


def _load(directory: str, modules: list, problems: list) -> None:
    for filename in sorted(os.listdir(directory)):
        if not filename.endswith(".py") or filename.startswith("_"):
            continue
        path = os.path.abspath(os.path.join(directory, filename))
        module_name = f"lorrygate_user_{filename[:-3]}"
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"{path} is not a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # (SystemExit: a script's main() run at import, argparse's exit)
            sys.modules.pop(module_name, None)
            problems.append(
                ConfigProblem(path, "", None, IMPORTS_CLEANLY, _import_problem(path, exc))
            )
            continue
        modules.append((path, module))


def in_helper(directory: str, name: str) -> str:
    """`` (<path> names '<name>', but ...)`` where a helper module of the drop-in folder (``_mine.py``) has the
    quoted text of ``name``: a strategy or decoder written into a file whose name makes it a helper, which is not
    loaded as a drop-in; else ""."""
    if not os.path.isdir(directory):
        return ""
    quoted = (f'"{name}"', f"'{name}'")
    for filename in sorted(os.listdir(directory)):
        if not (filename.startswith("_") and filename.endswith(".py")):
            continue
        path = os.path.join(os.path.abspath(directory), filename)
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                text = file.read(1 << 20)
        except OSError:
            continue
        if quoted[0] in text or quoted[1] in text:
            return (f" ({path} names {name!r}, but a module whose name starts with '_' is a helper that drop-ins "
                    f"import, not a drop-in itself: rename it to {filename.lstrip('_') or 'x.py'})")
    return ""


def collect(modules: list, interface, kind: str, problems: list) -> dict:
    """The classes of the modules that declare ``interface``: ``{name: (class, origin)}``."""
    found = {}
    for path, module in modules:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not interface.implementedBy(cls):
                continue
            _register(found, cls, interface, kind, f"{path}: class {cls.__name__}", problems)
    return found


def undeclared(modules: list, interface, name: str) -> str:
    """`` (<path>: class <C> is named '<name>' but does not declare @implementer(<I>) ...)`` for a drop-in class of
    that ``name`` with the interface's methods that `collect` passed over, the decorator forgotten; else ""."""
    for path, module in modules:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (cls.__module__ == module.__name__ and not interface.implementedBy(cls)
                    and (getattr(cls, "name", None) == name or _attrs_default(cls, "name") == name)
                    and all(hasattr(cls, attribute) or _attrs_has(cls, attribute) for attribute in interface.names())):
                return (f" ({path}: class {cls.__name__} is named {name!r} but does not declare "
                        f"@implementer({interface.__name__}); add 'from zope.interface import implementer', "
                        f"'from lorrygate.interfaces import {interface.__name__}' and '@implementer("
                        f"{interface.__name__})' above the class)")
    return ""


def collect_functions(modules: list, marker: str, kind: str, problems: list) -> dict:
    """Functions marked by a decorator (attribute ``marker`` holds the name)."""
    found = {}
    for path, module in modules:
        for _, function in inspect.getmembers(module, inspect.isfunction):
            name = getattr(function, marker, None)
            if name is None or function.__module__ != module.__name__:
                continue
            origin = f"{path}: function {function.__name__}"
            if name in found:
                problems.append(
                    ConfigProblem(origin, "", None, f"a {kind} name not used before", f"{name!r}, already defined by {found[name][1]}")
                )
                continue
            found[name] = (function, origin)
    return found


def installed() -> Any:
    """The entry points of every installed distribution, of all groups (anything with ``select(group=...)``:
    ``SelectableGroups`` before Python 3.12): one scan of the installed packages' metadata (6-10 ms with ~200
    of them, measured) for a configuration's strategies and decoders alike."""
    return importlib.metadata.entry_points()


def load_entry_points(kind: str, interface, problems: list, available: Any = None) -> dict:
    """Load the classes registered in this kind's entry-point group (of ``available``, from `installed`;
    scanned now when not given)."""
    found = {}
    for entry_point in (available if available is not None else installed()).select(group=ENTRY_POINT_GROUPS[kind]):
        origin = f"entry point {entry_point.name} = {entry_point.value}"
        try:
            cls = entry_point.load()
        except (Exception, SystemExit) as exc:
            problems.append(ConfigProblem(origin, "", None, f"a {kind} that imports cleanly", _import_problem("", exc)))
            continue
        _register(found, cls, interface, kind, origin, problems)
    return found


def _register(found: dict, cls, interface, kind: str, origin: str, problems: list) -> None:
    missing = [
        f"{attribute}{interface[attribute].getSignatureString() if hasattr(interface[attribute], 'getSignatureString') else ''}"
        for attribute in sorted(interface.names())
        if not hasattr(cls, attribute) and not _attrs_has(cls, attribute)
    ]
    wanted = f"a complete {interface.__name__} ({', '.join(sorted(interface.names()))})"
    if missing:
        problems.append(ConfigProblem(origin, "", None, wanted, "no " + ", no ".join(missing)))
        return
    try:
        verifyClass(interface, cls)
    except InterfaceInvalid as exc:
        problems.append(ConfigProblem(origin, "", None, wanted, " ".join(str(exc).split())))
        return
    name = getattr(cls, "name", None)
    if isinstance(name, property) or not isinstance(name, str):
        name = _attrs_default(cls, "name")
    if not isinstance(name, str) or not name:
        problems.append(
            ConfigProblem(origin, "", None, f"a class attribute 'name' (str) naming the {kind}", repr(name))
        )
        return
    if name in found:
        problems.append(
            ConfigProblem(origin, "", None, f"a {kind} name not used before", f"{name!r}, already defined by {found[name][1]}")
        )
        return
    found[name] = (cls, origin)


def _attrs_has(cls, attribute: str) -> bool:
    return any(field.name == attribute for field in getattr(cls, "__attrs_attrs__", ()))


def _attrs_default(cls, attribute: str):
    fields = getattr(cls, "__attrs_attrs__", None)
    if fields is None:
        return None
    for field in fields:
        if field.name == attribute:
            default = field.default
            return default if isinstance(default, str) else None
    return None
