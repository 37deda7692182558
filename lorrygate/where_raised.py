"""
Where the user's code raised: the file and line that an error of a
strategy, decoder or hook of one's own names.

``strategy 'factory' raised KeyError('line')`` says what, not where; a
strategy of 300 lines or a decoder that calls helpers of its own folder
needs the line. `where_raised` finds, in the exception's traceback, the
innermost frame in the folder of the code the gateway called (its file, or
a helper module beside it; not a library's, whose folder is a subfolder of
site-packages), and gives it
as `` at example.py:37 in match``. lorrygate's own code gets nothing: an
exception from it is lorrygate's bug, and the dead letter's stage says so.
"""

import os
import traceback

#: the folder of lorrygate's own modules
_OWN = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _folder(code) -> str:
    """The folder of the file that defines ``code`` (a function, a bound method, a callable instance's
    ``__call__``), or "" when it has none (a builtin, a C function)."""
    function = getattr(code, "__func__", code)
    compiled = getattr(function, "__code__", None)
    if compiled is None:
        compiled = getattr(vars(type(code)).get("__call__"), "__code__", None)  # (an instance of its class)
    if compiled is None or compiled.co_filename.startswith("<"):
        return ""
    return os.path.dirname(os.path.abspath(compiled.co_filename))


def where_raised(exc: BaseException, code) -> str:
    """`` at <file>:<line> in <function>`` of the innermost frame of ``exc``'s traceback in the folder of
    ``code``; "" for lorrygate's own code, or when no frame is there (the exception came from a library the
    code called, and no line of the code's folder was on the way)."""
    folder = _folder(code)
    if not folder or (folder + os.sep).startswith(_OWN):
        return ""
    seen: BaseException | None = exc
    for _ in range(3):  # the exception, then what it was raised from (the time limit's stop: in the code)
        if seen is None:
            break
        # (walked, not extracted: no source line is read for the frames; a flood of such errors reads no file)
        frames = list(traceback.walk_tb(seen.__traceback__))
        for frame, line in reversed(frames):
            path = os.path.abspath(frame.f_code.co_filename)
            if os.path.dirname(path) == folder:
                return f" at {os.path.basename(path)}:{line} in {frame.f_code.co_name}"
        seen = seen.__cause__ or seen.__context__
    return ""
