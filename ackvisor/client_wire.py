"""What the client puts on and reads off the wire.

The endpoint URL and its params, the V2 binary frame layouts and the bearer-token
WebSocket subprotocol.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import quote

from .channels.protocol import Message, ProtocolError

Params = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None

VSN: Final = "2.0.0"

_PHX_REPLY: Final = "phx_reply"
_PHX_ERROR: Final = "phx_error"
_PHX_CLOSE: Final = "phx_close"


# --------------------------------------------------------------------------
# URL and binary frames


def _js_string(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is float and value.is_integer() and math.isfinite(value):
        return str(int(value))
    return str(value)


def _encode_component(text: str) -> str:
    # encodeURIComponent leaves A-Z a-z 0-9 - _ . ! ~ * ' ( ) unescaped.
    return quote(text, safe="-_.!~*'()")


def serialize_params(params: Mapping[str, Any], parent_key: str | None = None) -> str:
    """phoenix.js ``Ajax.serialize``: Rails/Plug-style flattening, percent-encoded.

    ``{"user": {"id": 1}}`` -> ``user%5Bid%5D=1``; lists become ``key[0]=..``;
    ``True``/``False`` -> ``true``/``false``; ``None`` values are skipped.
    """
    parts: list[str] = []
    for key, value in params.items():
        param_key = f"{parent_key}[{key}]" if parent_key is not None else str(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            nested = serialize_params(value, param_key)
            if nested:
                parts.append(nested)
        elif isinstance(value, (list, tuple)):
            nested = serialize_params({str(i): v for i, v in enumerate(value)}, param_key)
            if nested:
                parts.append(nested)
        else:
            parts.append(_encode_component(param_key) + "=" + _encode_component(_js_string(value)))
    return "&".join(parts)


def _append_params(url: str, params: Mapping[str, Any]) -> str:
    if not params:
        return url
    query = serialize_params(params)
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


def endpoint_url(url: str, params: Mapping[str, Any] | None = None, *, vsn: str = VSN) -> str:
    """``<url>/websocket?<params>&vsn=2.0.0``, exactly like phoenix.js' ``endPointURL()``."""
    base = url.rstrip("/") + "/websocket"
    return _append_params(_append_params(base, params or {}), {"vsn": vsn})


def _eval_params(params: Params) -> dict[str, Any]:
    value = params() if callable(params) else params
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"params must be a mapping, got {type(value).__name__}")
    return dict(value)


def _bfield(value: str | None, name: str) -> bytes:
    if value is None:
        return b""
    data = value.encode("utf-8")
    if len(data) > 255:
        raise ValueError(f"{name} is {len(data)} UTF-8 bytes; binary frames allow at most 255")
    return data


def encode_client_binary_push(
    join_ref: str | None, ref: str | None, topic: str, event: str, payload: bytes
) -> bytes:
    """V2 client->server binary push: kind 0 and four 1-byte lengths (brief §3)."""
    j = _bfield(join_ref, "join_ref")
    r = _bfield(ref, "ref")
    t = _bfield(topic, "topic")
    e = _bfield(event, "event")
    return b"".join((bytes((0, len(j), len(r), len(t), len(e))), j, r, t, e, bytes(payload)))


def _bad_binary(detail: str, code: int = 1007) -> ProtocolError:
    return ProtocolError("bad_binary_header", code, detail=detail)


def decode_server_frame(data: bytes) -> Message:
    """Decode a V2 *server->client* binary frame (brief §3).

    kind 0 push (3 lengths: join_ref, topic, event; no ref), kind 1 reply
    (4 lengths: join_ref, ref, topic, status; becomes ``phx_reply`` with
    ``{"status": status, "response": bytes}``), kind 2 broadcast (2 lengths).
    Raises :class:`ProtocolError` on anything malformed. (The shared codec only
    decodes the client->server layout, which differs.)
    """
    data = bytes(data)
    size = len(data)
    if size == 0:
        raise _bad_binary("empty binary frame")
    kind = data[0]
    if kind == 0:
        header = 4
    elif kind == 1:
        header = 5
    elif kind == 2:
        header = 3
    else:
        raise _bad_binary(f"unsupported binary kind {kind}", 1003)
    if size < header:
        raise _bad_binary("truncated header")
    lengths = data[1:header]
    fields: list[str] = []
    at = header
    try:
        for n in lengths:
            end = at + n
            if end > size:
                raise _bad_binary("header lengths exceed frame size")
            fields.append(data[at:end].decode("utf-8"))
            at = end
    except UnicodeDecodeError:
        raise _bad_binary("header string is not valid UTF-8") from None
    payload = data[at:]
    if kind == 0:
        join_ref, topic, event = fields
        ref = None
    elif kind == 1:
        join_ref, ref_s, topic, status = fields
        return Message(join_ref or None, ref_s or None, topic, _PHX_REPLY,
                       {"status": status, "response": payload})
    else:
        topic, event = fields
        join_ref, ref = "", None
    if not topic or not event:
        raise ProtocolError("wrong_type", 1007, detail="empty topic or event")
    return Message(join_ref or None, ref, topic, event, payload)


def _bearer_protocol(token: str) -> str:
    # phoenix.js: btoa(token) (standard base64) with "=" padding stripped.
    encoded = base64.b64encode(token.encode("utf-8")).decode("ascii").rstrip("=")
    return "base64url.bearer.phx." + encoded
