"""Phoenix Channels wire format: the only place untrusted frames are parsed.

Pure Python, no I/O, no trio. Guarantees:

* ``Serializer.decode`` either returns a fully validated :class:`Message` or
  raises :class:`ProtocolError`; it never raises anything else, whatever the
  input (bytes, text, deeply nested or huge JSON, bad UTF-8, ...).
* Every ``str`` in a decoded :class:`Message` (refs, topic, event, and every
  key and string inside a JSON payload) is valid Unicode that encodes to UTF-8,
  and every number is finite, so re-encoding decoded data never fails.
* Encoders always emit compact JSON (``separators=(",", ":")``, no ASCII
  escaping, never ``NaN``/``Infinity``) or the V2 binary layout. A bad argument
  to an encoder is a server bug, not bad input: it raises ``ValueError`` or
  ``TypeError``, never :class:`ProtocolError`.

Wire formats (see the Phoenix protocol brief, sections 2-3):

* V2 (vsn ``2.x.y``): text frames are ``[join_ref, ref, topic, event, payload]``;
  binary frames start with a kind byte followed by 1-byte string lengths.
* V1 (vsn ``1.x.y``, or no vsn): text frames are JSON objects
  ``{topic, event, payload, ref[, join_ref]}``; outbound frames have no
  ``join_ref``; no binary payloads.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Final, NoReturn

__all__ = [
    "CLOSE_INVALID_PAYLOAD",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_UNSUPPORTED_DATA",
    "MAX_FRAME_BYTES_DEFAULT",
    "Message",
    "ProtocolError",
    "Serializer",
    "V1_JSON",
    "V2_JSON",
    "check_size",
    "decode_binary_push",
    "serializer_for_vsn",
]

#: WebSocket close code: the frame kind/type is not something we accept.
CLOSE_UNSUPPORTED_DATA: Final = 1003
#: WebSocket close code: the frame content is malformed.
CLOSE_INVALID_PAYLOAD: Final = 1007
#: WebSocket close code: the frame exceeds the size limit.
CLOSE_MESSAGE_TOO_BIG: Final = 1009

#: Default per-frame size limit (bytes) the transport should enforce with :func:`check_size`.
MAX_FRAME_BYTES_DEFAULT: Final = 1 << 20

# V2 binary frame kinds.
_KIND_PUSH: Final = 0
_KIND_REPLY: Final = 1
_KIND_BROADCAST: Final = 2

_PHX_REPLY: Final = "phx_reply"
_MAX_BINARY_FIELD: Final = 255


class ProtocolError(Exception):
    """The one error type for bad input from a peer.

    Attributes:

    * ``close_code``: ``None`` means "answer this one message with an error
      reply and keep the socket"; it is only ``None`` when ``topic`` is a
      non-empty ``str``, so a reply can always be addressed. Otherwise the
      WebSocket close code to use: 1003 unsupported data, 1007 invalid payload
      data, 1009 message too big.
    * ``reason``: short machine-readable string, one of ``"invalid_json"``,
      ``"not_an_array"``, ``"not_an_object"``, ``"wrong_arity"``,
      ``"wrong_type"``, ``"bad_binary_header"``, ``"too_big"``,
      ``"unsupported_vsn"``.
    * ``topic``, ``ref``, ``join_ref``: the message's values when they were
      present and valid (normalised as in :class:`Message`), else ``None``.
    * ``detail``: human-readable explanation (for logs, never sent as-is).
    """

    def __init__(
        self,
        reason: str,
        close_code: int | None = CLOSE_INVALID_PAYLOAD,
        *,
        topic: str | None = None,
        ref: str | None = None,
        join_ref: str | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.close_code = close_code
        self.topic = topic
        self.ref = ref
        self.join_ref = join_ref
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_protocol_error,
            (self.reason, self.close_code, self.topic, self.ref, self.join_ref, self.detail),
        )

    def __repr__(self) -> str:
        return (
            f"ProtocolError(reason={self.reason!r}, close_code={self.close_code!r}, "
            f"topic={self.topic!r}, ref={self.ref!r}, join_ref={self.join_ref!r}, "
            f"detail={self.detail!r})"
        )


def _rebuild_protocol_error(
    reason: str,
    close_code: int | None,
    topic: str | None,
    ref: str | None,
    join_ref: str | None,
    detail: str,
) -> ProtocolError:
    return ProtocolError(
        reason, close_code, topic=topic, ref=ref, join_ref=join_ref, detail=detail
    )


@dataclass(frozen=True, slots=True)
class Message:
    """One Phoenix message, either direction.

    When produced by ``decode``: ``join_ref``/``ref`` are ``None`` or ``str``
    (integer refs are converted to their decimal string; empty binary-frame
    refs become ``None``), ``topic`` and ``event`` are non-empty ``str``, and
    ``payload`` is a ``dict`` (text frames) or ``bytes`` (binary frames only).
    """

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: dict[str, Any] | bytes


# --------------------------------------------------------------------------
# JSON plumbing (built once; the C scanner/encoder are used)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-standard JSON constant {name}")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:32]}")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float)
_json_decode = _decoder.decode
_scan_once = _decoder.scan_once
_stdlib_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _json_decode_fast(text: str) -> Any:
    """``_json_decode(text)`` minus its per-call setup, for the common frame without
    surrounding whitespace; anything unusual (whitespace, extra data, an error) goes
    through ``_json_decode`` itself, so results and error messages are the stdlib's."""
    if not text or text[0] in " \t\n\r":
        return _json_decode(text)
    try:
        obj, end = _scan_once(text, 0)
    except StopIteration:
        return _json_decode(text)  # raises the JSONDecodeError with the position
    if end != len(text):
        return _json_decode(text)
    return obj


def _default(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


if json.encoder.c_make_encoder is not None:
    # The C encoder JSONEncoder.encode builds anew on every call, built once: less than
    # half the cost per frame, same output and errors (NaN and unknown types raise),
    # except that a circular structure fails with RecursionError (no marker dict).
    _c_encode = json.encoder.c_make_encoder(
        None, _default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def _json_encode(obj: Any) -> str:
        try:
            return "".join(_c_encode(obj, 0))
        except RecursionError:
            raise ValueError("circular reference or nesting too deep to encode as JSON") from None
else:  # pragma: no cover - CPython always has the C accelerator
    _json_encode = _stdlib_encode


def _has_lone_surrogate(obj: Any) -> bool:
    """True if any str (key or value) in the decoded JSON tree is not encodable as UTF-8."""
    stack = [obj]
    pop = stack.pop
    push = stack.append
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif kind is dict:
            for key, value in item.items():
                push(key)
                push(value)
        elif kind is list:
            stack.extend(item)
    return False


def _load_json(data: str | bytes | bytearray | memoryview) -> Any:
    """Parse one text frame; ProtocolError(1007, "invalid_json") on any failure."""
    if isinstance(data, str):
        text = data
        if not text.isascii():
            # A str handed over by the transport is decoded UTF-8 already; this
            # only rejects lone surrogates smuggled in by a direct caller.
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ProtocolError(
                    "invalid_json", CLOSE_INVALID_PAYLOAD, detail="text is not valid Unicode"
                ) from None
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(
                "invalid_json", CLOSE_INVALID_PAYLOAD, detail="invalid UTF-8"
            ) from None
    try:
        obj = _json_decode_fast(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ProtocolError(
            "invalid_json", CLOSE_INVALID_PAYLOAD, detail=str(exc)[:200]
        ) from None
    # Lone surrogates can only come from \uD800-\uDFFF escapes (paired ones are
    # merged by the parser), so the tree walk only runs when such escapes exist.
    if ("\\ud" in text or "\\uD" in text) and _has_lone_surrogate(obj):
        raise ProtocolError(
            "invalid_json", CLOSE_INVALID_PAYLOAD, detail="lone UTF-16 surrogate escape"
        )
    return obj


_BAD: Final = object()  # sentinel: "present but invalid"


def _norm_ref(value: Any) -> Any:
    """str | None pass through, int -> decimal str, anything else -> _BAD."""
    kind = type(value)
    if kind is str or value is None:
        return value
    if kind is int:
        return str(value)
    return _BAD


def _validate(
    join_ref: Any, ref: Any, topic: Any, event: Any, payload: Any
) -> Message:
    """Build a Message from already-parsed fields or raise ProtocolError("wrong_type")."""
    if type(topic) is not str or not topic:
        # Without a topic there is nothing to address an error reply to.
        raise ProtocolError(
            "wrong_type",
            CLOSE_INVALID_PAYLOAD,
            ref=_ok_or_none(_norm_ref(ref)),
            join_ref=_ok_or_none(_norm_ref(join_ref)),
            detail="topic must be a non-empty string",
        )
    nj = _norm_ref(join_ref)
    nr = _norm_ref(ref)
    if nj is _BAD or nr is _BAD:
        raise ProtocolError(
            "wrong_type",
            None,
            topic=topic,
            ref=_ok_or_none(nr),
            join_ref=_ok_or_none(nj),
            detail="join_ref and ref must be strings, integers or null",
        )
    if type(event) is not str or not event:
        raise ProtocolError(
            "wrong_type",
            None,
            topic=topic,
            ref=nr,
            join_ref=nj,
            detail="event must be a non-empty string",
        )
    if type(payload) is not dict:
        raise ProtocolError(
            "wrong_type",
            None,
            topic=topic,
            ref=nr,
            join_ref=nj,
            detail="payload must be a JSON object",
        )
    return Message(nj, nr, topic, event, payload)


def _ok_or_none(value: Any) -> str | None:
    return None if value is _BAD else value


# --------------------------------------------------------------------------
# Binary frames (V2)


def decode_binary_push(data: bytes) -> Message:
    """Decode a V2 client->server binary push (kind 0).

    Layout: ``kind(1)=0, len(join_ref), len(ref), len(topic), len(event)``
    (1 byte each), then the four UTF-8 strings, then the raw payload bytes.
    Empty join_ref/ref decode to ``None``; the payload is returned as ``bytes``.

    Raises :class:`ProtocolError` only: kind != 0 -> 1003 ``bad_binary_header``;
    truncated header or lengths past the end of the buffer, or strings that are
    not UTF-8 -> 1007 ``bad_binary_header``; empty topic -> 1007 ``wrong_type``;
    empty event -> reply-able ``wrong_type`` (close_code ``None``).
    """
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if size == 0:
        raise ProtocolError(
            "bad_binary_header", CLOSE_INVALID_PAYLOAD, detail="empty binary frame"
        )
    kind = data[0]
    if kind != _KIND_PUSH:
        raise ProtocolError(
            "bad_binary_header",
            CLOSE_UNSUPPORTED_DATA,
            detail=f"unsupported binary kind {kind}",
        )
    if size < 5:
        raise ProtocolError(
            "bad_binary_header", CLOSE_INVALID_PAYLOAD, detail="truncated header"
        )
    join_len, ref_len, topic_len, event_len = data[1], data[2], data[3], data[4]
    ref_at = 5 + join_len
    topic_at = ref_at + ref_len
    event_at = topic_at + topic_len
    payload_at = event_at + event_len
    if payload_at > size:
        raise ProtocolError(
            "bad_binary_header",
            CLOSE_INVALID_PAYLOAD,
            detail="header lengths exceed frame size",
        )
    try:
        join_ref = data[5:ref_at].decode("utf-8") if join_len else None
        ref = data[ref_at:topic_at].decode("utf-8") if ref_len else None
        topic = data[topic_at:event_at].decode("utf-8")
        event = data[event_at:payload_at].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(
            "bad_binary_header",
            CLOSE_INVALID_PAYLOAD,
            detail="header string is not valid UTF-8",
        ) from None
    if not topic:
        raise ProtocolError(
            "wrong_type",
            CLOSE_INVALID_PAYLOAD,
            ref=ref,
            join_ref=join_ref,
            detail="topic must be a non-empty string",
        )
    if not event:
        raise ProtocolError(
            "wrong_type",
            None,
            topic=topic,
            ref=ref,
            join_ref=join_ref,
            detail="event must be a non-empty string",
        )
    return Message(join_ref, ref, topic, event, data[payload_at:])


def _field(value: str | None, name: str) -> bytes:
    if value is None:
        return b""
    encoded = value.encode("utf-8")
    if len(encoded) > _MAX_BINARY_FIELD:
        raise ValueError(
            f"{name} is {len(encoded)} UTF-8 bytes; binary frames allow at most 255"
        )
    return encoded


def _is_binary(payload: Any) -> bool:
    kind = type(payload)
    if kind is dict:
        return False
    if kind is bytes or isinstance(payload, (bytes, bytearray, memoryview)):
        return True
    if isinstance(payload, dict):
        return False
    raise TypeError(
        f"payload must be a dict or bytes, not {type(payload).__name__}"
    )


def _binary_push(join_ref: str | None, topic: str, event: str, payload: Any) -> bytes:
    j = _field(join_ref, "join_ref")
    t = _field(topic, "topic")
    e = _field(event, "event")
    return b"".join((bytes((_KIND_PUSH, len(j), len(t), len(e))), j, t, e, payload))


def _binary_reply(
    join_ref: str | None, ref: str | None, topic: str, status: str, payload: Any
) -> bytes:
    j = _field(join_ref, "join_ref")
    r = _field(ref, "ref")
    t = _field(topic, "topic")
    s = _field(status, "status")
    return b"".join(
        (bytes((_KIND_REPLY, len(j), len(r), len(t), len(s))), j, r, t, s, payload)
    )


def _binary_broadcast(topic: str, event: str, payload: Any) -> bytes:
    t = _field(topic, "topic")
    e = _field(event, "event")
    return b"".join((bytes((_KIND_BROADCAST, len(t), len(e))), t, e, payload))


# --------------------------------------------------------------------------
# Serializers


class Serializer(ABC):
    """A wire format. Stateless; the module-level instances are shared.

    ``decode`` raises :class:`ProtocolError` only. The ``encode_*`` methods
    return ``str`` (send as a text frame) or ``bytes`` (send as a binary frame)
    and raise ``ValueError``/``TypeError`` only on server-side bugs (e.g. a
    non-dict, non-bytes payload, a binary-frame field over 255 UTF-8 bytes).
    """

    __slots__ = ()

    #: Protocol version string this serializer implements ("2.0.0" / "1.0.0").
    vsn: str

    @abstractmethod
    def decode(self, data: str | bytes) -> Message:
        """Parse one inbound frame (``str`` = text frame, ``bytes`` = binary frame)."""

    @abstractmethod
    def encode_push(
        self,
        join_ref: str | None,
        topic: str,
        event: str,
        payload: dict[str, Any] | bytes,
    ) -> str | bytes:
        """Encode a server-initiated channel push (no ref)."""

    @abstractmethod
    def encode_reply(
        self,
        join_ref: str | None,
        ref: str | None,
        topic: str,
        status: str,
        response: dict[str, Any] | bytes,
    ) -> str | bytes:
        """Encode a ``phx_reply`` to the client message ``ref``."""

    @abstractmethod
    def encode_broadcast(
        self, topic: str, event: str, payload: dict[str, Any] | bytes
    ) -> str | bytes:
        """Encode a fastlane broadcast (no join_ref, no ref)."""

    @abstractmethod
    def encode_message(self, msg: Message) -> str | bytes:
        """Encode an arbitrary message, e.g. ``phx_error``/``phx_close`` with ref = join_ref."""


class _V2JSONSerializer(Serializer):
    """V2: text frames are ``[join_ref, ref, topic, event, payload]``; binary per brief §3."""

    __slots__ = ()
    vsn = "2.0.0"

    def decode(self, data: str | bytes) -> Message:
        """Decode a V2 text (JSON array) or binary (kind 0 push) frame.

        Text: invalid UTF-8/JSON -> 1007 ``invalid_json``; not an array ->
        1007 ``not_an_array``; fewer than 5 items -> 1007 ``wrong_arity``
        (extra items are ignored); bad field types -> ``wrong_type``
        (reply-able, close_code ``None``, unless the topic itself is bad:
        then 1007). Binary: see :func:`decode_binary_push`.
        """
        if not isinstance(data, str):
            return decode_binary_push(data)
        obj = _load_json(data)
        if type(obj) is not list:
            raise ProtocolError(
                "not_an_array",
                CLOSE_INVALID_PAYLOAD,
                detail=f"expected a JSON array, got {_json_type(obj)}",
            )
        if len(obj) < 5:
            raise ProtocolError(
                "wrong_arity",
                CLOSE_INVALID_PAYLOAD,
                detail=f"expected 5 items, got {len(obj)}",
            )
        return _validate(obj[0], obj[1], obj[2], obj[3], obj[4])

    def encode_push(
        self,
        join_ref: str | None,
        topic: str,
        event: str,
        payload: dict[str, Any] | bytes,
    ) -> str | bytes:
        """``[join_ref, null, topic, event, payload]`` or binary kind 0 (3-length header)."""
        if _is_binary(payload):
            return _binary_push(join_ref, topic, event, payload)
        return _json_encode([join_ref, None, topic, event, payload])

    def encode_reply(
        self,
        join_ref: str | None,
        ref: str | None,
        topic: str,
        status: str,
        response: dict[str, Any] | bytes,
    ) -> str | bytes:
        """``[join_ref, ref, topic, "phx_reply", {"status", "response"}]`` or binary kind 1."""
        if _is_binary(response):
            return _binary_reply(join_ref, ref, topic, status, response)
        return _json_encode(
            [join_ref, ref, topic, _PHX_REPLY, {"status": status, "response": response}]
        )

    def encode_broadcast(
        self, topic: str, event: str, payload: dict[str, Any] | bytes
    ) -> str | bytes:
        """``[null, null, topic, event, payload]`` or binary kind 2."""
        if _is_binary(payload):
            return _binary_broadcast(topic, event, payload)
        return _json_encode([None, None, topic, event, payload])

    def encode_message(self, msg: Message) -> str | bytes:
        """``[join_ref, ref, topic, event, payload]``.

        A bytes payload is only representable without a ref (server binary
        frames have no ref, except replies, which use :meth:`encode_reply`):
        it is sent as a kind-0 push; with a ref it raises ``ValueError``.
        """
        payload = msg.payload
        if _is_binary(payload):
            if msg.ref is not None:
                raise ValueError(
                    "a server binary frame cannot carry a ref; use encode_reply for replies"
                )
            return _binary_push(msg.join_ref, msg.topic, msg.event, payload)
        return _json_encode([msg.join_ref, msg.ref, msg.topic, msg.event, payload])


class _V1JSONSerializer(Serializer):
    """V1 (legacy): JSON objects ``{topic, event, payload, ref[, join_ref]}``; no binary."""

    __slots__ = ()
    vsn = "1.0.0"

    def decode(self, data: str | bytes) -> Message:
        """Decode a V1 JSON object frame.

        ``bytes`` are read as UTF-8 JSON text (Phoenix's V1 serializer does the
        same with binary frames). Invalid UTF-8/JSON -> 1007 ``invalid_json``;
        not an object -> 1007 ``not_an_object``; missing or mistyped
        ``topic``/``event``/``payload``/``ref``/``join_ref`` -> ``wrong_type``
        (reply-able unless the topic is bad, as in V2).
        """
        obj = _load_json(data)
        if type(obj) is not dict:
            raise ProtocolError(
                "not_an_object",
                CLOSE_INVALID_PAYLOAD,
                detail=f"expected a JSON object, got {_json_type(obj)}",
            )
        get = obj.get
        return _validate(
            get("join_ref"), get("ref"), get("topic"), get("event"), get("payload")
        )

    @staticmethod
    def _json_only(payload: Any) -> None:
        if _is_binary(payload):
            raise ValueError("the V1 serializer does not support binary payloads")

    def encode_push(
        self,
        join_ref: str | None,
        topic: str,
        event: str,
        payload: dict[str, Any] | bytes,
    ) -> str | bytes:
        """``{"topic", "event", "payload", "ref": null}`` (join_ref is not sent)."""
        self._json_only(payload)
        return _json_encode(
            {"topic": topic, "event": event, "payload": payload, "ref": None}
        )

    def encode_reply(
        self,
        join_ref: str | None,
        ref: str | None,
        topic: str,
        status: str,
        response: dict[str, Any] | bytes,
    ) -> str | bytes:
        """``{"topic", "event": "phx_reply", "payload": {"status", "response"}, "ref"}``."""
        self._json_only(response)
        return _json_encode(
            {
                "topic": topic,
                "event": _PHX_REPLY,
                "payload": {"status": status, "response": response},
                "ref": ref,
            }
        )

    def encode_broadcast(
        self, topic: str, event: str, payload: dict[str, Any] | bytes
    ) -> str | bytes:
        """``{"topic", "event", "payload", "ref": null}``."""
        self._json_only(payload)
        return _json_encode(
            {"topic": topic, "event": event, "payload": payload, "ref": None}
        )

    def encode_message(self, msg: Message) -> str | bytes:
        """``{"topic", "event", "payload", "ref"}`` (join_ref is not sent)."""
        self._json_only(msg.payload)
        return _json_encode(
            {"topic": msg.topic, "event": msg.event, "payload": msg.payload, "ref": msg.ref}
        )


def _json_type(obj: Any) -> str:
    if obj is None:
        return "null"
    kind = type(obj)
    if kind is bool:
        return "boolean"
    if kind is int or kind is float:
        return "number"
    if kind is str:
        return "string"
    if kind is list:
        return "array"
    return "object"


#: The V2 serializer (vsn "2.0.0"), what phoenix.js speaks.
V2_JSON: Final[Serializer] = _V2JSONSerializer()
#: The legacy V1 serializer (vsn "1.0.0").
V1_JSON: Final[Serializer] = _V1JSONSerializer()


def serializer_for_vsn(vsn: str | None) -> Serializer:
    """Pick the serializer for the ``vsn`` query parameter.

    ``None`` -> V1 (Phoenix treats a missing vsn as "1.0.0"); ``"1.x.y"`` -> V1;
    ``"2.x.y"`` -> V2, where x and y are decimal integers without leading
    zeros. Anything else raises ``ProtocolError(reason="unsupported_vsn",
    close_code=1003)``; the transport should answer the handshake with 403.
    """
    if vsn is None:
        return V1_JSON
    if type(vsn) is str:
        parts = vsn.split(".")
        if len(parts) == 3 and all(
            p.isascii() and p.isdigit() and (len(p) == 1 or p[0] != "0") for p in parts
        ):
            major = parts[0]
            if major == "2":
                return V2_JSON
            if major == "1":
                return V1_JSON
    raise ProtocolError(
        "unsupported_vsn",
        CLOSE_UNSUPPORTED_DATA,
        detail=f"unsupported protocol version {str(vsn)[:40]!r}",
    )


def check_size(data: str | bytes, limit: int | None) -> None:
    """Raise ``ProtocolError(close_code=1009, reason="too_big")`` if ``data`` exceeds ``limit`` bytes.

    ``str`` is measured by its UTF-8 length (computed only when it could
    matter). ``limit=None`` means unlimited.
    """
    if limit is None:
        return
    size = len(data)
    if isinstance(data, str) and size <= limit < size * 4 and not data.isascii():
        size = len(data.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ProtocolError(
            "too_big",
            CLOSE_MESSAGE_TOO_BIG,
            detail=f"frame of {size} bytes exceeds limit {limit}",
        )
