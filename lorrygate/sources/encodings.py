"""
A payload its publisher sent compressed and says so: an HTTP request's ``Content-Encoding``, an AMQP message's
``content_encoding`` (Telegraf's http and amqp outputs with ``content_encoding = "gzip"``). It is inflated up
to a limit, since a few KB of gzip may inflate to gigabytes.
"""

import zlib

#: the compressed encodings read, with the zlib window bits that read each: ``deflate`` is zlib's format
#: (RFC 9110 8.4.1.2)
COMPRESSED = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def inflated(body: bytes, encoding: str, limit: int, limit_name: str, header: str = "Content-Encoding") -> bytes:
    """``body`` in ``encoding`` (a key of `COMPRESSED`) inflated, at most ``limit`` bytes of it; ValueError saying
    why for a body that is not in it, that ends early, or that inflates beyond the limit (``limit_name``: the
    setting's, for the message; ``header``: the name the publisher gave the encoding under)."""
    inflater = zlib.decompressobj(wbits=COMPRESSED[encoding])
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"{header} {encoding}, but the body is no {encoding}: {exc}") from None
    if len(data) > limit:
        raise ValueError(f"a {encoding} body that inflates beyond {limit_name} = {limit} bytes")
    if not inflater.eof:
        raise ValueError(f"{header} {encoding}, but the body ends before its {encoding} stream does")
    return data
