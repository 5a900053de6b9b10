import contextlib
import math

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from motionclone.protocol import errors as codes
from motionclone.protocol.codec import Limits, decode, encode
from motionclone.protocol.errors import ProtocolError
from motionclone.protocol.messages import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Accepted,
    ArraySpec,
    Echo,
    Error,
    Hello,
    Progress,
    Result,
    Submit,
)


def header(**fields):
    return msgpack.packb({"v": PROTOCOL_VERSION, **fields}, use_bin_type=True)


def frames_payload(shape=(2, 8, 8, 3)):
    return np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)


def test_submit_round_trip_keeps_fields_and_frames_bit_identical():
    frames = frames_payload()
    message = Submit("r1", {"prompt": "a fox", "seed": 3}, ArraySpec(frames.shape), reference_fps=24.0, preset="tiny")
    decoded, payloads = decode(encode(message, frames.data))
    assert decoded == message and list(payloads) == ["reference"]
    assert np.array_equal(np.frombuffer(payloads["reference"], np.uint8).reshape(frames.shape), frames)


def test_submit_with_a_condition_carries_both_parts_in_order():
    frames, condition = frames_payload(), frames_payload((2, 4, 6, 3))[::-1].copy()
    message = Submit(
        "r1",
        {"prompt": "a fox"},
        ArraySpec(frames.shape),
        condition=ArraySpec(condition.shape),
        condition_frames=[0, 15],
        condition_type="rgb",
    )
    parts = encode(message, frames.data, condition.data)
    assert len(parts) == 3
    decoded, payloads = decode(parts)
    assert decoded == message and list(payloads) == ["reference", "condition"]
    assert bytes(payloads["reference"]) == frames.tobytes()
    assert bytes(payloads["condition"]) == condition.tobytes()


def test_unused_optional_fields_stay_out_of_the_header_for_older_peers():
    frames = frames_payload()
    header = msgpack.unpackb(bytes(encode(Submit("r1", {}, ArraySpec(frames.shape)), frames.data)[0]))
    assert not {"condition", "condition_frames", "condition_type", "preset"} & set(header)
    assert header["reference"] == {"shape": list(frames.shape), "dtype": "uint8"}


def test_a_declared_condition_without_its_part_is_refused():
    frames = frames_payload()
    message = Submit("r1", {}, ArraySpec(frames.shape), condition=ArraySpec((1, 4, 4, 3)), condition_type="rgb")
    with pytest.raises(ProtocolError):
        encode(message, frames.data)
    header = encode(message, frames.data, b"\0" * 48)[0]
    with pytest.raises(ProtocolError) as caught:
        decode([header, frames.data])
    assert caught.value.code == codes.BAD_MESSAGE and caught.value.field == "condition"


def test_condition_images_are_held_to_the_frame_limits():
    frames = frames_payload()
    message = Submit("r1", {}, ArraySpec(frames.shape), condition=ArraySpec((1, 8, 4096, 3)), condition_type="rgb")
    # The size limit applies before the byte count: an oversized declaration that came with a few bytes.
    parts = [encode(message, frames.data, b"\0" * (8 * 4096 * 3))[0], frames.data, b"\0" * 16]
    with pytest.raises(ProtocolError) as caught:
        decode(parts, Limits(max_width=2048))
    assert caught.value.code == codes.TOO_LARGE and caught.value.field == "condition"
    assert caught.value.request_id == "r1"  # so that the client waiting for its Submit's answer gets this one


@given(
    job_id=st.text(max_size=40),
    stage=st.sampled_from(["prepare", "extract", "denoise", "decode"]),
    step=st.integers(0, 10_000),
    total=st.integers(1, 10_000),
    elapsed=st.floats(0, 1e6),
    eta=st.none() | st.floats(0, 1e6),
)
def test_progress_round_trip(job_id, stage, step, total, elapsed, eta):
    message = Progress(job_id, stage, step, total, elapsed, eta)
    assert decode(encode(message))[0] == message


def test_every_message_type_is_registered_under_its_wire_name():
    assert all(name == cls.TYPE for name, cls in MESSAGE_TYPES.items())
    assert {"hello", "submit", "cancel", "fetch", "ack", "ping"} <= set(MESSAGE_TYPES)


def test_result_with_metadata_round_trip():
    frames = frames_payload((3, 4, 4, 3))
    message = Result("j", ArraySpec(frames.shape), 8.0, {"seed": 1, "timings_s": {"denoise": 1.5}})
    decoded, payloads = decode(encode(message, frames.data))
    assert decoded == message and bytes(payloads["frames"]) == frames.tobytes()


@pytest.mark.parametrize(
    ("parts", "code", "field"),
    [
        ([b"\xc1"], codes.BAD_MESSAGE, None),
        ([msgpack.packb([1, 2])], codes.BAD_MESSAGE, None),
        ([msgpack.packb({"v": 99, "type": "ping", "request_id": "x"})], codes.UNSUPPORTED_VERSION, "v"),
        ([msgpack.packb({"v": True, "type": "ping", "request_id": "x"})], codes.UNSUPPORTED_VERSION, "v"),
        ([msgpack.packb({"v": 1.0, "type": "ping", "request_id": "x"})], codes.UNSUPPORTED_VERSION, "v"),
        ([header(type="teleport", request_id="x")], codes.UNKNOWN_TYPE, "type"),
        ([header(type="ping")], codes.INVALID_FIELD, "request_id"),
        ([header(type="ping", request_id="x", extra=1)], codes.INVALID_FIELD, "extra"),
        ([header(type="ping", request_id=5)], codes.INVALID_FIELD, "request_id"),
        ([header(type="queued", job_id="j", queue_position=True)], codes.INVALID_FIELD, "queue_position"),
        (
            [header(type="progress", job_id="j", stage="s", step=1, total=2, elapsed=math.nan)],
            codes.INVALID_FIELD,
            "elapsed",
        ),
        ([header(type="ping", request_id="x"), b"extra"], codes.BAD_MESSAGE, None),
        ([header(type="ping", request_id="x"), b"a", b"b"], codes.BAD_MESSAGE, None),
        # Empty bins and exts get past msgpack's length limits of 0; binary data belongs in parts.
        (
            [msgpack.packb({"v": 1, "type": "ping", "request_id": "x", b"": 1}, use_bin_type=True)],
            codes.BAD_MESSAGE,
            None,
        ),
        ([header(type="ping", request_id=b"")], codes.BAD_MESSAGE, None),
        ([header(type="ping", request_id=msgpack.ExtType(5, b""))], codes.BAD_MESSAGE, None),
        ([header(type="hello", request_id="x", client="c", nested={"a": [b""]})], codes.BAD_MESSAGE, None),
        (
            [header(type="echo", request_id="x", data={"shape": [1], "dtype": ["uint8"]}), b"a"],
            codes.INVALID_FIELD,
            "data",
        ),
        (
            [header(type="echo", request_id="x", data={"shape": [1], "dtype": {"a": 1}}), b"a"],
            codes.INVALID_FIELD,
            "data",
        ),
    ],
)
def test_malformed_messages_are_rejected_with_a_code_and_field(parts, code, field):
    with pytest.raises(ProtocolError) as raised:
        decode(parts)
    assert raised.value.code == code
    assert raised.value.field == field
    if field not in (None, "request_id", "v"):  # where the header could be read, the error names its request
        assert raised.value.request_id == msgpack.unpackb(parts[0]).get("request_id")


def test_a_type_this_peer_does_not_take_is_unknown_before_its_fields_are_read():
    # A server-only message with none of its fields, sent to a server: unknown_type, with the request id it carried.
    with pytest.raises(ProtocolError) as raised:
        decode([header(type="welcome", request_id="r1")], accepted_types={"hello", "ping"})
    assert (raised.value.code, raised.value.field, raised.value.request_id) == (codes.UNKNOWN_TYPE, "type", "r1")
    decoded, _ = decode([header(type="ping", request_id="r2")], accepted_types={"hello", "ping"})
    assert decoded.request_id == "r2"


@pytest.mark.parametrize(
    ("fields", "code"),
    [({"v": 2, "type": "hello"}, codes.UNSUPPORTED_VERSION), ({"v": 1, "type": "hello2"}, codes.UNKNOWN_TYPE)],
)
def test_a_refused_version_or_type_still_names_the_request(fields, code):
    """A client of another protocol version must be able to tell that its hello was refused, not wait for a welcome."""
    with pytest.raises(ProtocolError) as raised:
        decode([msgpack.packb({**fields, "request_id": "h1", "client": "c"})])
    assert (raised.value.code, raised.value.request_id) == (code, "h1")


def test_a_header_over_its_limit_is_refused_by_its_size_without_a_copy():
    class Part(bytes):
        def __bytes__(self):
            raise AssertionError("the oversized header was copied before it was refused")

    with pytest.raises(ProtocolError) as raised:
        decode([Part(b"\x80" * 2048)], Limits(max_header_bytes=1024))
    assert raised.value.code == codes.TOO_LARGE and "2048 bytes" in str(raised.value)


def submit_header(shape, dtype="uint8", **extra):
    return header(
        type="submit", request_id="r", params={"prompt": "x"}, reference={"shape": shape, "dtype": dtype}, **extra
    )


def test_declared_shape_must_match_the_bytes():
    with pytest.raises(
        ProtocolError, match=r"declares shape \[2, 8, 8, 3\] \(384 bytes\) but 383 bytes came"
    ) as raised:
        decode([submit_header([2, 8, 8, 3]), b"\0" * 383])
    assert raised.value.field == "reference"


def test_huge_declared_shapes_are_refused_before_allocation():
    limits = Limits(max_frames=64, max_width=1024, max_height=1024)
    with pytest.raises(ProtocolError) as raised:
        decode([submit_header([100000, 512, 512, 3]), b"\0" * 16], limits)
    assert raised.value.code == codes.TOO_LARGE and "100000 frames exceed the server's limit of 64" in str(raised.value)
    with pytest.raises(ProtocolError, match="4096 width exceed the server's limit of 1024"):
        decode([submit_header([2, 8, 4096, 3]), b"\0" * 16], limits)
    with pytest.raises(ProtocolError, match=r"shape must be \[frames, height, width, 3\]"):
        decode([submit_header([2, 8, 8, 4]), b"\0" * 512], limits)
    with pytest.raises(ProtocolError, match="dtype must be one of"):
        decode([submit_header([2, 8, 8, 3], dtype="float64"), b"\0" * 384], limits)


def test_header_and_message_size_limits():
    limits = Limits(max_header_bytes=100, max_message_bytes=1000)
    big_prompt = header(type="hello", request_id="x", client="c" * 200)
    with pytest.raises(ProtocolError, match="exceeds 100") as raised:
        decode([big_prompt], limits)
    assert raised.value.code == codes.TOO_LARGE
    with pytest.raises(ProtocolError, match="exceeds 1000"):
        decode([submit_header([2, 20, 20, 3]), b"\0" * 2400], limits)


def test_encode_refuses_a_payload_that_does_not_match_its_declaration():
    with pytest.raises(ProtocolError):
        encode(Submit("r", {}, ArraySpec((1, 2, 2, 3))), b"\0" * 5)
    with pytest.raises(ProtocolError):
        encode(Submit("r", {}, ArraySpec((1, 2, 2, 3))))


def test_error_message_fields_survive():
    message = Error(codes.INVALID_PARAMETER, "`width` must be a multiple of 8", field="width", request_id="r")
    assert decode(encode(message))[0] == message


def test_ints_are_accepted_where_floats_are_declared():
    decoded, _ = decode(
        [
            header(
                type="welcome",
                request_id="r",
                server_version="1",
                device="cpu",
                presets=["tiny"],
                default_preset="tiny",
                limits={},
                heartbeat_interval=1,
            )
        ]
    )
    assert decoded.heartbeat_interval == 1.0 and isinstance(decoded.heartbeat_interval, float)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=0, max_size=3))
def test_random_bytes_only_ever_raise_protocol_error(parts):
    with contextlib.suppress(ProtocolError):
        decode(parts)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["v", "type", "request_id", "job_id", "params", "reference", "queue_position", "client", "x"]),
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=10)
        | st.lists(st.integers(-5, 10), max_size=5)
        | st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1), max_size=3),
        max_size=6,
    ),
    st.sampled_from(sorted(MESSAGE_TYPES)),
)
def test_random_headers_only_ever_raise_protocol_error(fields, message_type):
    fields = {"v": PROTOCOL_VERSION, "type": message_type, **fields}
    with contextlib.suppress(ProtocolError):
        decode([msgpack.packb(fields, use_bin_type=True)])


def test_accepted_queue_position_is_an_int():
    decoded, _ = decode(encode(Accepted("r", "j", 2)))
    assert decoded.queue_position == 2 and decode(encode(Hello("r")))[0] == Hello("r")


def test_echo_carries_any_bytes_or_none():
    decoded, payloads = decode(encode(Echo("r", ArraySpec((5,))), b"abcde"))
    assert decoded.data == ArraySpec((5,)) and bytes(payloads["data"]) == b"abcde"
    assert decode(encode(Echo("r")))[1] == {}
