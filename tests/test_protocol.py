"""Tests for ackvisor.channels.protocol (Phoenix wire format, brief §2-§4, §12)."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ackvisor.channels.protocol import (
    MAX_FRAME_BYTES_DEFAULT,
    V1_JSON,
    V2_JSON,
    Message,
    ProtocolError,
    Serializer,
    check_size,
    decode_binary_push,
    serializer_for_vsn,
)

FAST = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --------------------------------------------------------------------------
# Test-side helpers: an independent encoder for client binary pushes and an
# independent decoder for server binary frames, written from the brief's table.


def client_binary_push(
    join_ref: str | None, ref: str | None, topic: str, event: str, payload: bytes
) -> bytes:
    fields = [(s or "").encode("utf-8") for s in (join_ref, ref, topic, event)]
    header = bytes([0] + [len(f) for f in fields])
    return header + b"".join(fields) + payload


def decode_server_binary(frame: bytes) -> dict[str, Any]:
    kind = frame[0]
    if kind == 0:
        names = ["join_ref", "topic", "event"]
    elif kind == 1:
        names = ["join_ref", "ref", "topic", "status"]
    elif kind == 2:
        names = ["topic", "event"]
    else:  # pragma: no cover - would be a serializer bug
        raise AssertionError(f"unknown kind {kind}")
    lengths = list(frame[1 : 1 + len(names)])
    pos = 1 + len(names)
    out: dict[str, Any] = {"kind": kind}
    for name, length in zip(names, lengths):
        out[name] = frame[pos : pos + length].decode("utf-8")
        pos += length
    out["payload"] = frame[pos:]
    return out


def err(fn, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value


# --------------------------------------------------------------------------
# V2 text frames


def test_v2_decode_transcript_frames() -> None:
    # §12 happy path, client side.
    assert V2_JSON.decode('["3","3","superheroes:lobby","phx_join",{}]') == Message(
        "3", "3", "superheroes:lobby", "phx_join", {}
    )
    ack = V2_JSON.decode(
        '["3","4","superheroes:lobby","message_ack",'
        '{"message_id":"9f","status":"Received"}]'
    )
    assert ack == Message(
        "3",
        "4",
        "superheroes:lobby",
        "message_ack",
        {"message_id": "9f", "status": "Received"},
    )
    hb = V2_JSON.decode('[null,"5","phoenix","heartbeat",{}]')
    assert hb == Message(None, "5", "phoenix", "heartbeat", {})


def test_v2_encode_transcript_frames_exact() -> None:
    assert (
        V2_JSON.encode_reply("3", "3", "superheroes:lobby", "ok", {})
        == '["3","3","superheroes:lobby","phx_reply",{"status":"ok","response":{}}]'
    )
    assert (
        V2_JSON.encode_push("3", "superheroes:lobby", "hydrate", {"message_id": "9f"})
        == '["3",null,"superheroes:lobby","hydrate",{"message_id":"9f"}]'
    )
    assert (
        V2_JSON.encode_reply(None, "5", "phoenix", "ok", {})
        == '[null,"5","phoenix","phx_reply",{"status":"ok","response":{}}]'
    )
    assert (
        V2_JSON.encode_message(
            Message("3", "3", "superheroes:lobby", "phx_error", {"reason": "channel_crash"})
        )
        == '["3","3","superheroes:lobby","phx_error",{"reason":"channel_crash"}]'
    )
    assert (
        V2_JSON.encode_reply(
            None, "6", "nope:1", "error", {"reason": "unmatched topic"}
        )
        == '[null,"6","nope:1","phx_reply",'
        '{"status":"error","response":{"reason":"unmatched topic"}}]'
    )
    assert (
        V2_JSON.encode_broadcast("room:1", "presence_diff", {"joins": {}, "leaves": {}})
        == '[null,null,"room:1","presence_diff",{"joins":{},"leaves":{}}]'
    )


def test_v2_encode_is_compact_and_not_ascii_escaped() -> None:
    out = V2_JSON.encode_push("1", "room:ü", "ev", {"k": "héllo ✓", "n": [1, 2.5]})
    assert isinstance(out, str)
    assert out == '["1",null,"room:ü","ev",{"k":"héllo ✓","n":[1,2.5]}]'


@pytest.mark.parametrize(
    ("encode", "expected"),
    [
        (
            lambda: V2_JSON.encode_push("7", "t:1", "ev", {"a": 1}),
            Message("7", None, "t:1", "ev", {"a": 1}),
        ),
        (
            lambda: V2_JSON.encode_reply("7", "8", "t:1", "ok", {"r": [1]}),
            Message(
                "7", "8", "t:1", "phx_reply", {"status": "ok", "response": {"r": [1]}}
            ),
        ),
        (
            lambda: V2_JSON.encode_broadcast("t:1", "ev", {"x": None}),
            Message(None, None, "t:1", "ev", {"x": None}),
        ),
        (
            lambda: V2_JSON.encode_message(Message("7", "7", "t:1", "phx_close", {})),
            Message("7", "7", "t:1", "phx_close", {}),
        ),
    ],
)
def test_v2_text_round_trip_every_kind(encode, expected: Message) -> None:
    assert V2_JSON.decode(encode()) == expected


def test_v2_six_element_array_accepted() -> None:
    msg = V2_JSON.decode('["1","2","t","e",{"a":1},"extra",{"more":true}]')
    assert msg == Message("1", "2", "t", "e", {"a": 1})


def test_v2_int_refs_converted_to_str() -> None:
    msg = V2_JSON.decode('[3,4,"t","e",{}]')
    assert msg.join_ref == "3" and msg.ref == "4"
    assert V2_JSON.decode('[null,-12,"t","e",{}]').ref == "-12"


def test_v2_decode_accepts_surrounding_whitespace() -> None:
    assert V2_JSON.decode(' \n[null,null,"t","e",{}]\n ').topic == "t"


# --------------------------------------------------------------------------
# V2 errors


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("", "invalid_json"),
        ("[", "invalid_json"),
        ("not json", "invalid_json"),
        ('[null,null,"t","e",{}] trailing', "invalid_json"),
        ('[null,null,"t","e",{"x":NaN}]', "invalid_json"),
        ('[null,null,"t","e",{"x":Infinity}]', "invalid_json"),
        ('[null,null,"t","e",{"x":-Infinity}]', "invalid_json"),
        ('[null,null,"t","e",{"x":1e999}]', "invalid_json"),
        ('[null,null,"t","e",{"x":"\\ud800"}]', "invalid_json"),
        ('[null,null,"t","e",{"\\udfff":1}]', "invalid_json"),
        ('[null,null,"t","e",{"x":"' + "\x01" + '"}]', "invalid_json"),
        ("[" * 50_000 + "]" * 50_000, "invalid_json"),
        ('{"topic":"t"}', "not_an_array"),
        ('"a string"', "not_an_array"),
        ("42", "not_an_array"),
        ("null", "not_an_array"),
        ("[]", "wrong_arity"),
        ('[null,null,"t","e"]', "wrong_arity"),
    ],
)
def test_v2_fatal_text_errors(frame: str, reason: str) -> None:
    e = err(V2_JSON.decode, frame)
    assert e.close_code == 1007
    assert e.reason == reason


def test_v2_huge_integer_is_invalid_json() -> None:
    e = err(V2_JSON.decode, '[null,null,"t","e",{"x":' + "9" * 5000 + "}]")
    assert (e.close_code, e.reason) == (1007, "invalid_json")


def test_v2_lone_surrogate_in_raw_text_rejected() -> None:
    e = err(V2_JSON.decode, '[null,null,"t","e",{"x":"\ud800"}]')
    assert (e.close_code, e.reason) == (1007, "invalid_json")


def test_v2_escaped_surrogate_pair_is_fine() -> None:
    msg = V2_JSON.decode('[null,null,"t","e",{"x":"\\ud83d\\ude00"}]')
    assert msg.payload == {"x": "\U0001f600"}


@pytest.mark.parametrize(
    ("frame", "topic", "ref", "join_ref"),
    [
        ('["1","2","room:1","e",[]]', "room:1", "2", "1"),
        ('["1","2","room:1","e",null]', "room:1", "2", "1"),
        ('["1","2","room:1","e","str"]', "room:1", "2", "1"),
        ('["1","2","room:1","",{}]', "room:1", "2", "1"),
        ('["1","2","room:1",5,{}]', "room:1", "2", "1"),
        ('["1",true,"room:1","e",{}]', "room:1", None, "1"),
        ('["1",2.5,"room:1","e",{}]', "room:1", None, "1"),
        ('[{},"2","room:1","e",{}]', "room:1", "2", None),
        ('[[1],7,"room:1","e",{}]', "room:1", "7", None),
    ],
)
def test_v2_replyable_wrong_type(
    frame: str, topic: str, ref: str | None, join_ref: str | None
) -> None:
    e = err(V2_JSON.decode, frame)
    assert e.reason == "wrong_type"
    assert e.close_code is None
    assert (e.topic, e.ref, e.join_ref) == (topic, ref, join_ref)


@pytest.mark.parametrize(
    "frame",
    ['["1","2","","e",{}]', '["1","2",null,"e",{}]', '["1","2",7,"e",{}]'],
)
def test_v2_bad_topic_is_fatal(frame: str) -> None:
    e = err(V2_JSON.decode, frame)
    assert (e.close_code, e.reason) == (1007, "wrong_type")
    assert e.topic is None
    assert e.ref == "2"


# --------------------------------------------------------------------------
# V2 binary frames


def test_binary_client_push_decode() -> None:
    frame = client_binary_push("3", "4", "room:ü", "upload", b"\x00\xffdata")
    assert frame[:5] == bytes([0, 1, 1, 7, 6])
    expected = Message("3", "4", "room:ü", "upload", b"\x00\xffdata")
    assert decode_binary_push(frame) == expected
    assert V2_JSON.decode(frame) == expected
    assert V2_JSON.decode(bytearray(frame)) == expected
    assert V2_JSON.decode(memoryview(frame)) == expected


def test_binary_client_push_empty_refs_and_payload() -> None:
    msg = decode_binary_push(client_binary_push(None, None, "t", "e", b""))
    assert msg == Message(None, None, "t", "e", b"")
    assert type(msg.payload) is bytes


def test_binary_server_push_layout_exact() -> None:
    out = V2_JSON.encode_push("12", "room:1", "blob", b"\x01\x02")
    assert out == bytes([0, 2, 6, 4]) + b"12" + b"room:1" + b"blob" + b"\x01\x02"
    assert decode_server_binary(out) == {
        "kind": 0,
        "join_ref": "12",
        "topic": "room:1",
        "event": "blob",
        "payload": b"\x01\x02",
    }


def test_binary_server_push_none_join_ref() -> None:
    out = V2_JSON.encode_push(None, "t", "e", bytearray(b"x"))
    assert out == bytes([0, 0, 1, 1]) + b"te" + b"x"


def test_binary_server_reply_layout_exact() -> None:
    out = V2_JSON.encode_reply("3", "45", "room:1", "ok", b"\xde\xad")
    assert out == bytes([1, 1, 2, 6, 2]) + b"3" + b"45" + b"room:1" + b"ok" + b"\xde\xad"
    assert decode_server_binary(out) == {
        "kind": 1,
        "join_ref": "3",
        "ref": "45",
        "topic": "room:1",
        "status": "ok",
        "payload": b"\xde\xad",
    }
    none_refs = V2_JSON.encode_reply(None, None, "t", "error", b"")
    assert none_refs == bytes([1, 0, 0, 1, 5]) + b"t" + b"error"


def test_binary_server_broadcast_layout_exact() -> None:
    out = V2_JSON.encode_broadcast("room:é", "ev", b"\x00")
    topic = "room:é".encode()
    assert out == bytes([2, len(topic), 2]) + topic + b"ev" + b"\x00"
    assert decode_server_binary(out) == {
        "kind": 2,
        "topic": "room:é",
        "event": "ev",
        "payload": b"\x00",
    }


def test_binary_encode_message_without_ref_is_push() -> None:
    out = V2_JSON.encode_message(Message("3", None, "t", "e", b"p"))
    assert out == V2_JSON.encode_push("3", "t", "e", b"p")
    with pytest.raises(ValueError):
        V2_JSON.encode_message(Message("3", "3", "t", "e", b"p"))


def test_binary_field_too_long_is_value_error() -> None:
    V2_JSON.encode_push(None, "x" * 255, "e", b"")  # exactly 255 is fine
    with pytest.raises(ValueError):
        V2_JSON.encode_push(None, "x" * 256, "e", b"")
    with pytest.raises(ValueError):
        V2_JSON.encode_reply("1", "2", "t", "é" * 128, b"")  # 256 UTF-8 bytes
    with pytest.raises(ValueError):
        V2_JSON.encode_broadcast("t", "e" * 300, b"")


def test_encode_rejects_non_dict_payload() -> None:
    with pytest.raises(TypeError):
        V2_JSON.encode_push(None, "t", "e", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        V1_JSON.encode_broadcast("t", "e", "s")  # type: ignore[arg-type]


def test_encode_never_emits_nan() -> None:
    with pytest.raises(ValueError):
        V2_JSON.encode_push(None, "t", "e", {"x": float("nan")})


@pytest.mark.parametrize(
    ("frame", "close_code", "reason"),
    [
        (b"", 1007, "bad_binary_header"),
        (bytes([1, 0, 0, 1, 1]) + b"te", 1003, "bad_binary_header"),
        (bytes([2, 1, 1]) + b"te", 1003, "bad_binary_header"),
        (bytes([255]), 1003, "bad_binary_header"),
        (bytes([0]), 1007, "bad_binary_header"),
        (bytes([0, 0, 0, 1]), 1007, "bad_binary_header"),
        (bytes([0, 0, 0, 1, 1]) + b"t", 1007, "bad_binary_header"),
        (bytes([0, 255, 255, 255, 255]) + b"abc", 1007, "bad_binary_header"),
        (bytes([0, 0, 0, 1, 1]) + b"\xfft", 1007, "bad_binary_header"),
        (bytes([0, 1, 0, 1, 1]) + b"\xc3te", 1007, "bad_binary_header"),
        (bytes([0, 0, 0, 0, 1]) + b"e", 1007, "wrong_type"),
    ],
)
def test_binary_decode_errors(frame: bytes, close_code: int, reason: str) -> None:
    e = err(decode_binary_push, frame)
    assert (e.close_code, e.reason) == (close_code, reason)
    e2 = err(V2_JSON.decode, frame)
    assert (e2.close_code, e2.reason) == (close_code, reason)


def test_binary_empty_event_is_replyable() -> None:
    e = err(decode_binary_push, client_binary_push("1", "2", "room:1", "", b"x"))
    assert (e.close_code, e.reason) == (None, "wrong_type")
    assert (e.topic, e.ref, e.join_ref) == ("room:1", "2", "1")


# --------------------------------------------------------------------------
# V1


def test_v1_decode_object_frames() -> None:
    assert V1_JSON.decode(
        '{"topic":"room:1","event":"phx_join","payload":{"a":1},"ref":"1"}'
    ) == Message(None, "1", "room:1", "phx_join", {"a": 1})
    assert V1_JSON.decode(
        '{"topic":"room:1","event":"e","payload":{},"ref":7,"join_ref":3}'
    ) == Message("3", "7", "room:1", "e", {})
    assert V1_JSON.decode(
        '{"topic":"t","event":"e","payload":{},"ref":null,"extra":1}'
    ) == Message(None, None, "t", "e", {})
    # Missing ref counts as null.
    assert V1_JSON.decode('{"topic":"t","event":"e","payload":{}}').ref is None
    # Binary frames are read as UTF-8 JSON text, as Phoenix's V1 serializer does.
    assert V1_JSON.decode(b'{"topic":"t","event":"e","payload":{},"ref":"1"}').ref == "1"


def test_v1_encode_exact_and_no_join_ref() -> None:
    assert json.loads(V1_JSON.encode_push("3", "t", "ev", {"a": 1})) == {
        "topic": "t",
        "event": "ev",
        "payload": {"a": 1},
        "ref": None,
    }
    assert (
        V1_JSON.encode_reply("3", "4", "t", "ok", {})
        == '{"topic":"t","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"4"}'
    )
    assert json.loads(V1_JSON.encode_broadcast("t", "ev", {})) == {
        "topic": "t",
        "event": "ev",
        "payload": {},
        "ref": None,
    }
    out = V1_JSON.encode_message(Message("3", "3", "t", "phx_error", {"reason": "x"}))
    assert "join_ref" not in json.loads(out)
    assert V1_JSON.decode(out) == Message(None, "3", "t", "phx_error", {"reason": "x"})


def test_v1_round_trip_every_kind() -> None:
    assert V1_JSON.decode(V1_JSON.encode_push("3", "t", "ev", {"a": [1]})) == Message(
        None, None, "t", "ev", {"a": [1]}
    )
    assert V1_JSON.decode(V1_JSON.encode_reply("3", "9", "t", "error", {"r": 1})) == Message(
        None, "9", "t", "phx_reply", {"status": "error", "response": {"r": 1}}
    )
    assert V1_JSON.decode(V1_JSON.encode_broadcast("t", "ev", {})) == Message(
        None, None, "t", "ev", {}
    )


def test_v1_binary_payload_is_value_error() -> None:
    with pytest.raises(ValueError):
        V1_JSON.encode_push("1", "t", "e", b"x")
    with pytest.raises(ValueError):
        V1_JSON.encode_reply("1", "2", "t", "ok", b"x")
    with pytest.raises(ValueError):
        V1_JSON.encode_broadcast("t", "e", b"x")
    with pytest.raises(ValueError):
        V1_JSON.encode_message(Message(None, None, "t", "e", b"x"))


@pytest.mark.parametrize(
    ("frame", "close_code", "reason"),
    [
        ("{", 1007, "invalid_json"),
        (b"\xff\xfe", 1007, "invalid_json"),
        ('[null,null,"t","e",{}]', 1007, "not_an_object"),
        ('"x"', 1007, "not_an_object"),
        ('{"event":"e","payload":{}}', 1007, "wrong_type"),
        ('{"topic":"","event":"e","payload":{}}', 1007, "wrong_type"),
        ('{"topic":"t","payload":{}}', None, "wrong_type"),
        ('{"topic":"t","event":"e"}', None, "wrong_type"),
        ('{"topic":"t","event":"e","payload":[]}', None, "wrong_type"),
        ('{"topic":"t","event":"e","payload":{},"ref":{}}', None, "wrong_type"),
        ('{"topic":"t","event":"e","payload":{},"join_ref":false}', None, "wrong_type"),
    ],
)
def test_v1_errors(frame: str | bytes, close_code: int | None, reason: str) -> None:
    e = err(V1_JSON.decode, frame)
    assert (e.close_code, e.reason) == (close_code, reason)
    if close_code is None:
        assert e.topic == "t"


# --------------------------------------------------------------------------
# vsn negotiation, size check, error type


@pytest.mark.parametrize(
    ("vsn", "expected"),
    [
        (None, V1_JSON),
        ("1.0.0", V1_JSON),
        ("1.2.3", V1_JSON),
        ("2.0.0", V2_JSON),
        ("2.10.7", V2_JSON),
    ],
)
def test_serializer_for_vsn(vsn: str | None, expected: Serializer) -> None:
    assert serializer_for_vsn(vsn) is expected


@pytest.mark.parametrize(
    "vsn",
    ["", "2", "2.0", "3.0.0", "0.1.0", "2.0.0.0", "2.0.0-rc.1", "v2.0.0", "02.0.0",
     "2.0.x", "２.0.0", " 2.0.0", "2..0"],
)
def test_serializer_for_vsn_unsupported(vsn: str) -> None:
    e = err(serializer_for_vsn, vsn)
    assert e.reason == "unsupported_vsn"
    assert e.close_code is not None


def test_serializer_vsn_attributes() -> None:
    assert V2_JSON.vsn == "2.0.0"
    assert V1_JSON.vsn == "1.0.0"
    assert isinstance(V2_JSON, Serializer) and isinstance(V1_JSON, Serializer)


def test_check_size() -> None:
    assert MAX_FRAME_BYTES_DEFAULT == 1 << 20
    check_size(b"x" * 10, 10)
    check_size("x" * 10, 10)
    check_size("x" * 10, None)
    e = err(check_size, b"x" * 11, 10)
    assert (e.close_code, e.reason) == (1009, "too_big")
    # str is measured in UTF-8 bytes: 4 chars, 8 bytes.
    check_size("éééé", 8)
    e = err(check_size, "éééé", 7)
    assert (e.close_code, e.reason) == (1009, "too_big")


def test_protocol_error_attributes_and_pickle() -> None:
    e = ProtocolError("wrong_type", None, topic="t", ref="1", join_ref="2", detail="d")
    assert isinstance(e, Exception)
    assert "wrong_type" in str(e)
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.reason, e2.close_code, e2.topic, e2.ref, e2.join_ref, e2.detail) == (
        "wrong_type",
        None,
        "t",
        "1",
        "2",
        "d",
    )
    assert ProtocolError(reason="unsupported_vsn").close_code == 1007


def test_message_is_frozen() -> None:
    msg = Message(None, None, "t", "e", {})
    with pytest.raises(AttributeError):
        msg.topic = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------
# Property tests


def _assert_only_protocol_error(serializer: Serializer, data: str | bytes) -> None:
    try:
        msg = serializer.decode(data)
    except ProtocolError as e:
        assert e.reason
        assert e.close_code in (None, 1003, 1007)
        if e.close_code is None:
            assert isinstance(e.topic, str) and e.topic
        return
    # Anything decoded must be valid and re-encodable.
    assert isinstance(msg.topic, str) and msg.topic
    assert isinstance(msg.event, str) and msg.event
    assert msg.join_ref is None or isinstance(msg.join_ref, str)
    assert msg.ref is None or isinstance(msg.ref, str)
    if isinstance(msg.payload, bytes):
        assert serializer is V2_JSON
    else:
        assert isinstance(msg.payload, dict)
        out = serializer.encode_message(msg)
        assert isinstance(out, str)
        out.encode("utf-8")


@FAST
@given(st.binary(max_size=300))
def test_prop_random_bytes_only_protocol_error(data: bytes) -> None:
    _assert_only_protocol_error(V2_JSON, data)
    _assert_only_protocol_error(V1_JSON, data)
    _assert_only_protocol_error(V2_JSON, b"\x00" + data)


# Any characters, lone surrogates included, with JSON punctuation over-represented.
any_chars = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),
    st.sampled_from(list('[]{}",:\\ud80DF1e-.tnl')),
)
json_tokens = st.sampled_from(
    ["[", "]", "{", "}", ",", ":", "null", "true", "1", "-0", "1e999", "NaN",
     '"t"', '"e"', '""', '"\\ud800"', '"\\ud83d\\ude00"', "\\", " "]
)


@FAST
@given(st.lists(any_chars, max_size=300).map("".join))
def test_prop_random_text_only_protocol_error(text: str) -> None:
    _assert_only_protocol_error(V2_JSON, text)
    _assert_only_protocol_error(V1_JSON, text)


@FAST
@given(st.lists(json_tokens, max_size=40).map("".join))
def test_prop_token_soup_only_protocol_error(text: str) -> None:
    _assert_only_protocol_error(V2_JSON, text)
    _assert_only_protocol_error(V1_JSON, text)


def _text_with_surrogates(max_size: int) -> st.SearchStrategy[str]:
    # st.text() never yields lone surrogates, so join characters by hand.
    chars = st.characters() | st.characters(categories=["Cs"])
    return st.lists(chars, max_size=max_size).map("".join)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | _text_with_surrogates(5)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=25,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["", "t", "room:1", "phoenix", "phx_join", "1"]),
    st.integers(-5, 5),
)
frame_like = st.one_of(
    json_values,
    st.lists(field_values, min_size=0, max_size=7),
    st.tuples(field_values, field_values, field_values, field_values, json_values).map(list),
    st.dictionaries(
        st.sampled_from(["topic", "event", "payload", "ref", "join_ref", "x"]),
        field_values,
        max_size=6,
    ),
)


@FAST
@given(frame_like)
def test_prop_random_json_only_protocol_error(value: Any) -> None:
    text = json.dumps(value)  # may contain NaN/Infinity: must be rejected cleanly
    _assert_only_protocol_error(V2_JSON, text)
    _assert_only_protocol_error(V1_JSON, text)
    _assert_only_protocol_error(V2_JSON, text.encode("utf-8"))
    _assert_only_protocol_error(V1_JSON, text.encode("utf-8"))
    escaped = json.dumps(value, ensure_ascii=True)
    _assert_only_protocol_error(V2_JSON, escaped)


# Valid messages. Strings from st.text() never contain surrogates.
payload_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
payloads = st.dictionaries(st.text(max_size=10), payload_values, max_size=5)
short_text = st.text(min_size=1, max_size=60)  # <= 240 UTF-8 bytes
opt_ref = st.none() | short_text
messages = st.builds(Message, opt_ref, opt_ref, short_text, short_text, payloads)


@FAST
@given(messages)
def test_prop_v2_text_round_trip(msg: Message) -> None:
    out = V2_JSON.encode_message(msg)
    assert isinstance(out, str)
    assert V2_JSON.decode(out) == msg
    push = V2_JSON.encode_push(msg.join_ref, msg.topic, msg.event, msg.payload)
    assert V2_JSON.decode(push) == Message(msg.join_ref, None, msg.topic, msg.event, msg.payload)
    bcast = V2_JSON.encode_broadcast(msg.topic, msg.event, msg.payload)
    assert V2_JSON.decode(bcast) == Message(None, None, msg.topic, msg.event, msg.payload)


@FAST
@given(messages, short_text)
def test_prop_v1_text_round_trip(msg: Message, status: str) -> None:
    out = V1_JSON.encode_message(msg)
    assert V1_JSON.decode(out) == Message(None, msg.ref, msg.topic, msg.event, msg.payload)
    reply = V1_JSON.encode_reply(msg.join_ref, msg.ref, msg.topic, status, msg.payload)
    assert V1_JSON.decode(reply) == Message(
        None, msg.ref, msg.topic, "phx_reply", {"status": status, "response": msg.payload}
    )


@FAST
@given(opt_ref, opt_ref, short_text, short_text, st.binary(max_size=200))
def test_prop_binary_round_trip(
    join_ref: str | None, ref: str | None, topic: str, event: str, payload: bytes
) -> None:
    # Client push: test encoder -> library decoder.
    frame = client_binary_push(join_ref, ref, topic, event, payload)
    assert V2_JSON.decode(frame) == Message(join_ref, ref, topic, event, payload)
    # Server kinds: library encoder -> test decoder.
    push = V2_JSON.encode_push(join_ref, topic, event, payload)
    assert decode_server_binary(push) == {
        "kind": 0,
        "join_ref": join_ref or "",
        "topic": topic,
        "event": event,
        "payload": payload,
    }
    reply = V2_JSON.encode_reply(join_ref, ref, topic, event, payload)
    assert decode_server_binary(reply) == {
        "kind": 1,
        "join_ref": join_ref or "",
        "ref": ref or "",
        "topic": topic,
        "status": event,
        "payload": payload,
    }
    bcast = V2_JSON.encode_broadcast(topic, event, payload)
    assert decode_server_binary(bcast) == {
        "kind": 2,
        "topic": topic,
        "event": event,
        "payload": payload,
    }


@FAST
@given(st.binary(min_size=5, max_size=64))
def test_prop_binary_header_fuzz(data: bytes) -> None:
    # Force kind 0 so the length/UTF-8 checks get exercised.
    _assert_only_protocol_error(V2_JSON, b"\x00" + data[1:])


nasty_text = _text_with_surrogates(8)
nasty_payloads = st.dictionaries(
    nasty_text,
    st.recursive(
        st.none() | st.integers() | nasty_text,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(nasty_text, children, max_size=4),
        max_leaves=12,
    ),
    max_size=4,
)


@FAST
@given(nasty_text, nasty_text, nasty_text, nasty_payloads, st.booleans())
def test_prop_wellformed_frames_with_any_strings(
    ref: str, topic: str, event: str, payload: dict[str, Any], ascii_only: bool
) -> None:
    # Shape-valid frames whose strings may hold lone surrogates, sent raw or as
    # \\uXXXX escapes: either rejected with ProtocolError or fully re-encodable.
    v2 = json.dumps([ref, ref, topic, event, payload], ensure_ascii=ascii_only)
    _assert_only_protocol_error(V2_JSON, v2)
    v1 = json.dumps(
        {"topic": topic, "event": event, "payload": payload, "ref": ref},
        ensure_ascii=ascii_only,
    )
    _assert_only_protocol_error(V1_JSON, v1)
