"""
Where the user's code raised: the file and line that an error of a
strategy, decoder or hook of one's own names.

``strategy 'factory' raised KeyError('line')`` says what, not where; a
strategy of 300 lines or a decoder that calls helpers of its own folder
needs the line. `where_raised` finds, in the exception's traceback, the
innermost frame of the code the gateway called: of a drop-in module's
folder (its file, or a helper beside it), or of an installed package (any
of its modules); not a library's line. It gives it as
`` at example.py:37 in match`` (a package's: ``plant/levels.py:2``). lorrygate's own code gets nothing: an
exception from it is lorrygate's bug, and the dead letter's stage says so.
"""

import os
import sys
import traceback

#: the folder of lorrygate's own modules
_OWN = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _folder(code) -> tuple:
    """Where the code that ``code`` runs lives: ``(folder, deep)``. For a module of a package (a strategy
    installed as an entry point) the folder of its top package, whose every module, however deep, is the
    code's (``deep``); else the folder of its file (a drop-in module: its helpers lie beside it). ``("", False)``
    for code without a file (a builtin, a C function)."""
    function = getattr(code, "__func__", code)
    compiled = getattr(function, "__code__", None)
    if compiled is None:
        function = vars(type(code)).get("__call__")  # (an instance of its class)
        compiled = getattr(function, "__code__", None)
    if compiled is None or compiled.co_filename.startswith("<"):
        return "", False
    module = sys.modules.get(getattr(function, "__module__", None) or "")
    top = (getattr(module, "__package__", None) or "").partition(".")[0]
    top_file = getattr(sys.modules.get(top), "__file__", None) if top else None
    if top_file:
        return os.path.dirname(os.path.abspath(top_file)), True
    return os.path.dirname(os.path.abspath(compiled.co_filename)), False


def where_raised(exc: BaseException, code) -> str:
    """`` at <file>:<line> in <function>`` of the innermost frame of ``exc``'s traceback in the code of
    ``code`` (`_folder`; a package's file by its path in the package); "" for lorrygate's own code, or when no
    frame is there (the exception came from a library the code called, and no line of the code was on the way)."""
    folder, deep = _folder(code)
    if not folder or (folder + os.sep).startswith(_OWN):
        return ""
    inside = folder + os.sep
    seen: BaseException | None = exc
    for _ in range(3):  # the exception, then what it was raised from (the time limit's stop: in the code)
        if seen is None:
            break
        # (walked, not extracted: no source line is read for the frames; a flood of such errors reads no file)
        frames = list(traceback.walk_tb(seen.__traceback__))
        for frame, line in reversed(frames):
            path = os.path.abspath(frame.f_code.co_filename)
            if path.startswith(inside) if deep else os.path.dirname(path) == folder:
                shown = os.path.relpath(path, os.path.dirname(folder)) if deep else os.path.basename(path)
                return f" at {shown}:{line} in {frame.f_code.co_name}"
        seen = seen.__cause__ or seen.__context__
    return ""
