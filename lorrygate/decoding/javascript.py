"""
User decoders in JavaScript, run in an embedded V8 (mini-racer).

A codec file defines either

- ``decodeUplink(input)``, The Things Stack's payload formatter interface:
  ``input`` is ``{bytes: [...], fPort: n, recvTime: "..."}`` and the result
  ``{data: {...}, warnings: [...], errors: [...]}``; or
- ``decode(payload, topic)``: ``payload`` an array of byte values, the result
  an object or a list of objects.

So that vendor codecs run unchanged, the bytes and port come from the
message: The Things Stack uplink JSON (``uplink_message.frm_payload`` and
``f_port``), ChirpStack uplink JSON (``data`` and ``fPort``), or else the raw
payload with the decoder's configured ``fport``. For an uplink the codec only
decodes the bytes: the record keeps the envelope exactly as the built-in
``ttn`` and ``chirpstack`` decoders keep it (the uplink's time, ``f_port``,
``f_cnt``, the best gateway's ``rssi``/``snr`` and id, the device ids).

Each call runs under a time limit and a memory limit (V8's heap, and the
ArrayBuffers a call allocates, which V8's limit does not count): a codec that
loops or allocates without end is stopped, the message becomes a dead letter with the
reason, and the next message gets a fresh engine. Calls run on the decoder's
own thread, never on the reactor.
"""

import base64
import json
import os
import re
from typing import Any

import attrs
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from lorrygate.decoding.jsonobject import loads
from lorrygate.decoding.records import objects_records
from lorrygate.decoding.vendors import chirpstack_envelope, tts_envelope, uplink_record
from lorrygate.errors import DecodeError
from lorrygate.interfaces import IDecoder


def load_codec(path: str) -> str:
    """Read a codec file and check that V8 compiles it and finds an entry point."""
    from py_mini_racer import MiniRacer

    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    context = MiniRacer()
    try:
        context.eval(source, timeout=2000)
        kinds = str(context.eval("typeof decodeUplink + ',' + typeof decode")).split(",")
    except Exception as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    finally:
        context.close()
    if "function" not in kinds:
        raise ValueError("defines neither decodeUplink(input) nor decode(payload, topic)")
    return source


#: V8's heap limit does not count ArrayBuffer backing stores (a codec with
#: ``memory = 32`` held 700 MB in them): every constructor that allocates one
#: (ArrayBuffer, SharedArrayBuffer, the typed arrays, and through their
#: species slice, map, from, ...) is replaced by a subclass that charges the
#: bytes against the same limit, per call; WebAssembly is removed.
_ARRAY_BUFFER_GUARD = """
(function (limit) {
  let used = 0;
  const charge = (bytes) => {
    used += bytes;
    if (used > limit) throw new RangeError(`lorrygate: ArrayBuffer memory limit of ${limit} bytes exceeded`);
  };
  globalThis.__lorrygate_reset = () => { used = 0; };
  const Base = ArrayBuffer;
  globalThis.ArrayBuffer = class ArrayBuffer extends Base {
    constructor(length, ...rest) { charge(Number(length) || 0); super(length, ...rest); }
  };
  if (typeof SharedArrayBuffer !== 'undefined') {
    const SBase = SharedArrayBuffer;
    globalThis.SharedArrayBuffer = class SharedArrayBuffer extends SBase {
      constructor(length, ...rest) { charge(Number(length) || 0); super(length, ...rest); }
    };
  }
  for (const name of ['Int8Array', 'Uint8Array', 'Uint8ClampedArray', 'Int16Array', 'Uint16Array', 'Int32Array',
                      'Uint32Array', 'Float32Array', 'Float64Array', 'BigInt64Array', 'BigUint64Array']) {
    const T = globalThis[name];
    if (typeof T !== 'function') continue;
    const size = T.BYTES_PER_ELEMENT;
    globalThis[name] = ({[name]: class extends T {
      constructor(first, ...rest) {
        if (!(first instanceof Base) && !(typeof SharedArrayBuffer !== 'undefined' && first instanceof SharedArrayBuffer)) {
          const length = typeof first === 'number' ? first : (first && typeof first.length === 'number' ? first.length : 0);
          charge(length * size);
        }
        super(first, ...rest);
      }
    }})[name];
  }
  delete globalThis.WebAssembly;
})
"""
_GUARD_TRIPPED = "lorrygate: ArrayBuffer memory limit"

#: the largest payload handed to a JavaScript codec (LoRaWAN frames are at
#: most 242 bytes; uplink envelopes a few KB)
MAX_CODEC_PAYLOAD = 1 << 20


def _lorawan_input(message, fport: int):
    """The bytes, port and receive time of an uplink, as a codec expects them, and its envelope (None for
    a raw payload)."""
    try:
        document = loads(message.payload)
    except (ValueError, UnicodeDecodeError):
        document = None
    if isinstance(document, dict):
        uplink = document.get("uplink_message")
        if isinstance(uplink, dict) and "frm_payload" in uplink:
            return (_frame(uplink["frm_payload"], "uplink_message.frm_payload"), uplink.get("f_port", fport),
                    uplink.get("received_at"), tts_envelope(document))
        if "data" in document and "fPort" in document and isinstance(document.get("deviceInfo"), dict):
            return (_frame(document["data"] or "", "data"), document["fPort"], document.get("time"),
                    chirpstack_envelope(document))
    return message.payload, fport, None, None


#: V8's text of an exception thrown out of a call: ``<anonymous>:LINE: MESSAGE``, the line shown with a caret,
#: then for an Error its stack (``    at FUNCTION (<anonymous>:LINE:COLUMN)``)
_THROWN = re.compile(r"<anonymous>:(\d+): ([^\n]*)")
_FRAME = re.compile(r"^\s+at (\S+) \(<anonymous>:(\d+):(\d+)\)$", re.M)


def js_error(exc: Exception, path: str = "") -> str:
    """What a codec threw and where, on one line: ``TypeError: Cannot read properties of null (reading 'x') at
    lht65.js:12:9 in decode`` (the codec's file: it is compiled on its own, so V8's lines are the file's); the
    engine's text as it is when it has another form."""
    text = str(exc)
    thrown = _THROWN.match(text)
    if thrown is None:
        return f"{type(exc).__name__}: {text}"
    name = os.path.basename(path) or "the codec"
    frame = _FRAME.search(text)
    if frame is None or frame.group(2) != thrown.group(1):
        # (a thrown string or object has no stack; an arrow function's frame has no name, and the first named
        # frame is then a caller's)
        return f"{thrown.group(2)} at {name}:{thrown.group(1)}"
    return f"{thrown.group(2)} at {name}:{frame.group(2)}:{frame.group(3)} in {frame.group(1)}"


class _NoFrame(ValueError):
    """An uplink whose frame is not base64: the message's fault, not the codec's."""


def _frame(text, where: str) -> bytes:
    """An uplink's frame from its base64 text."""
    try:
        return base64.b64decode(text, validate=True)
    except (TypeError, ValueError) as exc:  # (binascii.Error is a ValueError)
        raise _NoFrame(f"the uplink's {where} is not base64 ({exc}): {str(text)[:40]!r}") from None


@implementer(IDecoder)
@attrs.define(eq=False)
class JavaScriptDecoder:
    name: str
    source: str
    reactor: Any = None
    timezone: Any = None
    path: str = ""
    fport: int = 1
    timeout: float = 0.5
    memory: int = 64 * 1024 * 1024
    _pool: ThreadPool | None = None
    _context: Any = None
    _entry: str = ""

    def start(self) -> None:
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"lorrygate-js-{self.name}")
        self._pool.start()

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
        if self._context is not None:
            self._context.close()
            self._context = None

    def decode(self, message, address):
        if len(message.payload) > MAX_CODEC_PAYLOAD:
            # Refused before it is copied into the engine: V8's heap limit does
            # not count what a codec makes of it (ArrayBuffers).
            raise DecodeError(self.name, f"a {len(message.payload)}-byte payload is larger than the "
                                         f"{MAX_CODEC_PAYLOAD} bytes a JavaScript codec takes")
        if self._pool is None:
            return self._run(message)
        return deferToThreadPool(self.reactor, self._pool, self._run, message)

    def _engine(self):
        from py_mini_racer import MiniRacer

        if self._context is None:
            context = MiniRacer()
            context.set_hard_memory_limit(self.memory)
            context.eval(f"{_ARRAY_BUFFER_GUARD}({int(self.memory)});")
            context.eval(self.source, timeout=self.timeout * 1000)
            self._entry = "decodeUplink" if context.eval("typeof decodeUplink") == "function" else "decode"
            self._context = context
        return self._context

    def _run(self, message) -> list:
        from py_mini_racer import JSOOMException, JSTimeoutException

        try:
            context = self._engine()
            context.eval("__lorrygate_reset()")
            envelope = None
            if self._entry == "decodeUplink":
                payload, fport, received, envelope = _lorawan_input(message, self.fport)
                argument = {"bytes": list(payload), "fPort": fport}
                if received:
                    argument["recvTime"] = received
                result = context.call("decodeUplink", argument, timeout=self.timeout * 1000)
            else:
                result = context.call("decode", list(message.payload), message.topic, timeout=self.timeout * 1000)
        except _NoFrame as exc:
            raise DecodeError(self.name, str(exc)) from None
        except (JSTimeoutException, JSOOMException) as exc:
            self._reset(settle=isinstance(exc, JSTimeoutException))
            limit = f"time limit of {self.timeout:g} s" if isinstance(exc, JSTimeoutException) else f"memory limit of {self.memory // 2**20} MiB"
            raise DecodeError(self.name, f"the codec exceeded its {limit} and was stopped") from None
        except Exception as exc:
            if _GUARD_TRIPPED in str(exc):
                self._reset()  # what it allocated may be held by the engine: a fresh one
                raise DecodeError(self.name, f"the codec exceeded its memory limit of {self.memory // 2**20} MiB "
                                             "(ArrayBuffers) and was stopped") from None
            if self._context is not None and self._context.was_hard_memory_limit_reached():
                self._reset()
            raise DecodeError(self.name, f"the codec raised {js_error(exc, self.path)}") from None
        return self._records(result, message, envelope)

    def _reset(self, settle: bool = False) -> None:
        if self._context is not None:
            if settle:
                # V8 answers a call stopped at its time limit after the stop; a trivial call after it
                # returns once that answer is out, before the engine is closed (closed first, the answer
                # met a closed event loop inside py_mini_racer: "Exception ignored ... Event loop is closed")
                try:
                    self._context.eval("0", timeout=self.timeout * 1000)
                except Exception:
                    pass
            self._context.close()
        self._context = None

    def _records(self, result, message, envelope=None) -> list:
        result = json.loads(json.dumps(result, default=_js_value))
        if self._entry == "decodeUplink":
            if not isinstance(result, dict):
                raise DecodeError(self.name, f"decodeUplink returned {type(result).__name__}, not {{data, warnings, errors}}")
            errors = result.get("errors") or []
            if errors:
                raise DecodeError(self.name, "the codec reported: " + "; ".join(map(str, errors)))
            result = result.get("data")
        if envelope is not None:
            items = [result] if type(result) is dict else result
            if type(items) is list and items and all(type(item) is dict for item in items):
                return [uplink_record(self, message, item, envelope) for item in items]
        records = objects_records(result, message, self.name, self.timezone)
        if records is None:
            raise DecodeError(self.name, f"the codec returned {type(result).__name__}, not an object or a list of objects")
        return records


def _js_value(value):
    if isinstance(value, (list, tuple)):
        return list(value)
    try:
        return dict(value)
    except (TypeError, ValueError):
        pass
    try:
        return list(value)
    except TypeError:
        return str(value)
