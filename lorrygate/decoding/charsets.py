"""
The character set a publisher names beside a text payload (``Content-Type: application/json;
charset=ISO-8859-1``: HTTP's header, MQTT 5's Content Type, an AMQP message's ``content_type``, a Kafka
record's ``content-type`` header), and the payload read in it. The decoders read UTF-8: a device's Latin-1
``°C`` is made UTF-8 before they see it, rather than refused as bytes that are not UTF-8.
"""

import codecs

#: the media types whose payloads are text, which a ``charset`` parameter tells the encoding of
TEXT_TYPES = ("text/", "application/json", "application/senml+json", "application/x-ndjson", "application/ndjson",
              "application/jsonl", "application/x-www-form-urlencoded")

#: charsets whose text the decoders read as it is
UTF8 = ("utf-8", "ascii")


def charset_of(header: str, media_type: str) -> str:
    """Python's codec name of the ``charset`` of a text payload's Content-Type ``header`` (``media_type``: its
    type, lower case, without parameters); ``utf-8`` without one, for a type that is not text, and for a
    charset Python does not know (the payload is read as UTF-8 then)."""
    if not media_type.startswith(TEXT_TYPES):
        return "utf-8"
    for parameter in header.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return codec_name(value.strip().strip('"')) or "utf-8"
    return "utf-8"


def codec_name(charset: str) -> str | None:
    """Python's codec name of a charset (``latin-1``: ``iso8859-1``), or None for one Python does not know,
    and for a codec that is not a charset (``zlib``, ``base64``: `codecs.lookup` knows them too)."""
    try:
        info = codecs.lookup(charset)
    except LookupError:
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def transcoded(payload: bytes, charset: str) -> bytes:
    """A text payload in ``charset`` as UTF-8, what the decoders read; a payload that is not ``charset`` text is
    left as it came (a decoder refuses it, and its dead letter keeps the bytes)."""
    try:
        return payload.decode(charset).encode("utf-8")
    except UnicodeDecodeError:
        return payload


def as_utf8(payload: bytes, content_type: str) -> tuple:
    """``(payload, content_type)`` of a message whose Content Type names a charset other than UTF-8: the payload
    in UTF-8 and the type without its charset (what a dead letter keeps, so that a replay does not read it
    twice); ``(payload, content_type)`` as they are for any other, and for a payload that is not text of its
    charset."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    charset = charset_of(content_type, media_type)
    if charset in UTF8:
        return payload, content_type
    text = transcoded(payload, charset)
    if text is payload:
        return payload, content_type
    kept = [part for part in content_type.split(";")[1:] if part.partition("=")[0].strip().lower() != "charset"]
    return text, ";".join([content_type.split(";", 1)[0], *kept])
