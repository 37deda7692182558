"""
Which user code a channel runs, for reloads: a hash a channel at a time of the files of the strategies
directory (and of the codec files) that can change what it does.

A reload restarts a channel whose code changed. Edited anywhere in the directory, every channel was restarted:
each dropped its connection and subscribed again, and a channel at QoS 0 lost what its broker sent meanwhile,
for an edit of a strategy it does not run. A drop-in module counts for a channel unless all of these hold: it
defines strategies or decoders, none of them the channel's; no ``module:function`` of the config names it (a
hook, a Tributary graph); and it is no module of a dataflow. Helpers (``_*.py``, and the files of a helper
package: a subdirectory with an ``__init__.py``) and every other file of the directory count for all channels
(what imports them is not known before it runs), but a codec file of a ``[decoder:NAME]`` counts only for the
channels whose chain has that decoder. Hidden files count for none.

A storage's ``type = python`` first-sample hook is the drop-in module its ``callable`` names, and
the helpers: edited, the hook's runner and the storage were kept, and the hook ran the code of the start before.
So is a ``tributary://`` storage's graph (``graph``): its function, compared as an object, made every reload
restart that storage and its channels, edited or not.
"""

import hashlib
import os

from lorrygate import plugins


def code_of(directory: str, modules: list, channels, hooks: dict, parser, decoder_sections: dict,
            dataflow_modules: list, storages: dict | None = None) -> tuple:
    """``({channel name: hex digest}, {hook name: hex digest}, {storage name: hex digest})``: the code each
    channel of ``channels`` runs, that of each ``type = python`` hook of ``hooks`` whose ``callable`` is of the
    directory (a drop-in, a helper, a module of a helper package), and that of each Tributary storage of
    ``storages`` whose ``graph`` is (that module and the helpers; an installed module is not imported again on
    a reload). ``modules``: the drop-in modules imported (`plugins.load_modules`), ``decoder_sections``:
    ``{name: (section, values)}`` of the ``[decoder:NAME]`` sections. Each file is read once."""
    folder = os.path.abspath(directory)
    codecs = {os.path.abspath(values["file"]): name for name, (_, values) in decoder_sections.items()
              if values.get("file")}
    dataflows = {os.path.abspath(path) for path in dataflow_modules}
    files = _tree(folder)
    files += sorted(path for path in codecs if path not in files)
    files += sorted(path for path in dataflows if path not in files)
    digests = {path: _digest(path) for path in files}
    python_hooks = {name: hook.callable for name, hook in hooks.items() if hook.type == "python"}
    graphs = {name: storage.graph for name, storage in (storages or {}).items() if storage.kind == "tributary"}
    return (_channels(files, digests, modules, channels, parser, codecs, dataflows),
            _named(folder, files, digests, python_hooks), _named(folder, files, digests, graphs))


def _channels(files: list, digests: dict, modules: list, channels, parser, codecs: dict, dataflows: set) -> dict:
    provided = _names_of_files(modules)
    referenced = _referenced_stems(parser)
    code = {}
    for channel in channels:
        names = {channel.strategy, *channel.decoders}
        digest = hashlib.sha256()
        for path in files:
            if path in codecs and codecs[path] not in names:
                continue  # another channel's codec
            own = provided.get(path)
            if (own and own.isdisjoint(names) and path not in dataflows
                    and os.path.basename(path)[:-3] not in referenced):
                continue  # strategies and decoders of other channels
            digest.update(path.encode() + b"\0" + digests[path] + b"\0")
        code[channel.name] = digest.hexdigest()
    return code


def helper_packages(folder: str) -> list:
    """The directories of the packages in the strategies directory (``_lib/`` with its ``__init__.py``, which the
    drop-ins import: a reload imports it again) and of their subpackages. Other subdirectories are no code a
    drop-in imports (a data directory beside the drop-ins, whose database changes with every commit)."""
    found: list = []
    if not os.path.isdir(folder):
        return found
    for root, directories, _ in os.walk(folder):
        directories[:] = sorted(name for name in directories if not name.startswith(".") and name != "__pycache__"
                                and os.path.isfile(os.path.join(root, name, "__init__.py")))
        found += [os.path.join(root, name) for name in directories]
    return found


def _tree(folder: str) -> list:
    """The files of the strategies directory and of its helper packages (`helper_packages`: their edits were not
    seen), sorted; no hidden file (an editor's swap file, changed as the edit goes on, restarted every
    channel)."""
    found: list = []
    for directory in [folder, *helper_packages(folder)] if os.path.isdir(folder) else []:
        found += [path for path in (os.path.join(directory, name) for name in sorted(os.listdir(directory))
                                    if not name.startswith(".")) if os.path.isfile(path)]
    return found


def _named(folder: str, files: list, digests: dict, references: dict) -> dict:
    """``{name: hex digest}`` of the ``{name: "module:function"}`` whose module is of the directory (a drop-in, a
    helper, a module of a helper package: ``_lib.inventory:register``, whose edits were not seen): it and the
    helpers (``_*.py``, and the files of the helper packages)."""
    inside = folder + os.sep
    helpers = [path for path in files if path.startswith(inside) and (
        os.path.dirname(path) != folder or os.path.basename(path).startswith("_") and path.endswith(".py"))]
    code = {}
    for name, reference in references.items():
        module = _module_file(folder, reference.partition(":")[0], digests)
        if module is not None:
            digest = hashlib.sha256()
            for path in [module, *(path for path in helpers if path != module)]:
                digest.update(path.encode() + b"\0" + digests[path] + b"\0")
            code[name] = digest.hexdigest()
    return code


def _module_file(folder: str, module_name: str, digests: dict) -> str | None:
    """The file of the directory that ``module_name`` imports: ``<folder>/inventory.py`` for ``inventory``,
    ``<folder>/_lib/inventory.py`` (or ``.../inventory/__init__.py``) for ``_lib.inventory``, a module of a helper
    package; None for an installed module."""
    base = os.path.join(folder, *module_name.split("."))
    return next((path for path in (base + ".py", os.path.join(base, "__init__.py")) if path in digests), None)


def _names_of_files(modules: list) -> dict:
    """``{path: the strategy and decoder names its classes and functions give}`` of the drop-in modules."""
    from lorrygate.decoding.functions import MARKER
    from lorrygate.interfaces import IDecoder, IStrategy

    found: dict = {}
    unsaid: list = []  # (names given twice: `build_strategies` and `build_decoders` say so)
    for registered in (plugins.collect(modules, IStrategy, "strategy", unsaid),
                       plugins.collect(modules, IDecoder, "decoder", unsaid),
                       plugins.collect_functions(modules, MARKER, "decoder", unsaid)):
        for name, (_, origin) in registered.items():
            found.setdefault(os.path.abspath(origin.rsplit(": ", 1)[0]), set()).add(name)
    return found


def _referenced_stems(parser) -> set:
    """The module names that the config's ``module:function`` values name (a hook, a Tributary graph)."""
    stems = set()
    for section in parser.sections():
        for _, value in parser.items(section, raw=True):
            module, colon, function = value.strip().partition(":")
            if colon and module and function and "/" not in function and module.replace(".", "").isidentifier():
                stems.add(module)
    return stems


def files_digest(paths: list) -> str:
    """A hex digest of the files at ``paths`` ("" for none): a broker's or a listener's TLS files, which a reload
    compares (a certificate renewed on disk under the same name)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode() + b"\0" + (_digest(path) if path else b"") + b"\0")
    return digest.hexdigest()


def _digest(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).digest()
    except OSError:
        return b"missing"
