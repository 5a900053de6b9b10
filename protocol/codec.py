"""Encode and decode protocol messages, with limits checked before anything is allocated. No bpy, no torch.

`encode` and `decode` are the only places msgpack is called. `decode` checks, in order: part count, header size,
msgpack well-formedness (with msgpack's own size caps), the version, the type, every field's presence and type,
unknown fields, and declared shapes against the bytes that came with them. Each failure raises `ProtocolError`
with a code from `errors` and the offending field.
"""

import math
import types
import typing
from collections.abc import Collection
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import msgpack

from .errors import BAD_MESSAGE, INVALID_FIELD, TOO_LARGE, UNKNOWN_TYPE, UNSUPPORTED_VERSION, ProtocolError
from .messages import DTYPE_SIZES, MESSAGE_TYPES, PROTOCOL_VERSION, ArraySpec, Message

Buffer = bytes | bytearray | memoryview

# Binary fields holding frames (count, height, width, 3): their shapes are held to the frame and size limits.
VIDEO_FIELDS = ("reference", "condition", "frames")
MAX_BINARY_PARTS = max(len(cls.BINARY_FIELDS) for cls in MESSAGE_TYPES.values())
# A job's last message: one its client cannot read still ends the job there (named by `ProtocolError.job_id`).
JOB_ENDING_TYPES = ("result", "cancelled", "error")
# At any depth of a header: the most items of a list, and the most entries of a map.
MAX_HEADER_LIST_ITEMS = 4096
MAX_HEADER_MAP_ENTRIES = 1024


@dataclass(frozen=True)
class Limits:
    """What a peer accepts. The server announces its limits in Welcome.

    Attributes:
        max_message_bytes: whole multipart message; the server also sets it as ZMQ_MAXMSGSIZE, which libzmq applies
            to each part, so an oversized part is dropped before it is even received.
        max_header_bytes: the msgpack header.
        max_frames: frames in an array part.
        max_width, max_height: pixels of an array part.
    """

    max_message_bytes: int = 512 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    max_frames: int = 1024
    max_width: int = 2048
    max_height: int = 2048

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def encode(message: Message, *payloads: Buffer | None) -> list[Buffer]:
    """Message (+ the raw parts its binary fields declare, in `BINARY_FIELDS` order) -> list of ZeroMQ frames.

    `payloads` holds one buffer per binary field that is declared (not None); None entries are skipped, so
    `encode(message, None)` is a message without a raw part.

    Raises `ProtocolError` for a header that `decode` would refuse before it could read the request id (binary
    values, keys that are not strings, too many items), so that the sender learns why in its own thread.
    """
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": message.TYPE}
    for item in fields(message):
        value = getattr(message, item.name)
        if value is None and item.default is None:
            continue  # left out: the peer fills in the default, and older peers never see a field they do not know
        header[item.name] = _plain(value)
    _check_plain(header)
    parts: list[Buffer] = [msgpack.packb(header, use_bin_type=True)]
    declared = _declared_parts(message)
    given = [payload for payload in payloads if payload is not None]
    if len(declared) != len(given):
        raise ProtocolError(
            BAD_MESSAGE,
            f"{message.TYPE}: {len(declared)} binary parts declared ({', '.join(declared) or 'none'}) but "
            f"{len(given)} given; each part and its declaration must come together",
        )
    for (name, spec), payload in zip(declared.items(), given, strict=True):
        view = memoryview(payload).cast("B")
        if spec.nbytes != view.nbytes:
            raise ProtocolError(
                BAD_MESSAGE, f"{message.TYPE}: {view.nbytes} bytes for {name} of shape {list(spec.shape)}", name
            )
        parts.append(view)
    return parts


def _declared_parts(message: Message) -> dict[str, ArraySpec]:
    """The binary fields of `message` that declare a part, in wire order."""
    declared = {name: getattr(message, name) for name in message.BINARY_FIELDS}
    return {name: spec for name, spec in declared.items() if spec is not None}


def decode(
    frames: list[Buffer], limits: Limits = Limits(), accepted_types: Collection[str] | None = None
) -> tuple[Message, dict[str, memoryview]]:
    """List of ZeroMQ frames -> (message, its raw parts by the name of the field that declares each). Raises
    `ProtocolError`.

    `accepted_types` limits the message types this peer takes (a server takes only what clients send): any other
    known type is refused as `unknown_type` before its fields are looked at.
    """
    if not frames or len(frames) > 1 + MAX_BINARY_PARTS:
        raise ProtocolError(BAD_MESSAGE, f"a message has 1 to {1 + MAX_BINARY_PARTS} parts, got {len(frames)}")
    total = sum(memoryview(frame).nbytes for frame in frames)
    if total > limits.max_message_bytes:
        raise ProtocolError(TOO_LARGE, f"message of {total} bytes exceeds {limits.max_message_bytes}")
    header_bytes = memoryview(frames[0]).nbytes
    if header_bytes > limits.max_header_bytes:  # checked before the copy: part 0 may be as large as the message
        raise ProtocolError(TOO_LARGE, f"header of {header_bytes} bytes exceeds {limits.max_header_bytes}")
    header = _unpack(bytes(frames[0]), limits)
    # Errors after this point still name the request, so that the peer can tell what was refused.
    request_id = header.get("request_id")
    request_id = request_id if isinstance(request_id, str) else None
    version = header.pop("v", None)
    if type(version) is not int or version != PROTOCOL_VERSION:  # not True, not 1.0: an integer
        raise ProtocolError(
            UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported; this peer speaks {PROTOCOL_VERSION}",
            "v",
            request_id,
        )
    message_type = header.pop("type", None)
    cls = MESSAGE_TYPES.get(message_type) if isinstance(message_type, str) else None
    if cls is None:
        raise ProtocolError(
            UNKNOWN_TYPE, f"unknown message type {message_type!r}; known: {sorted(MESSAGE_TYPES)}", "type", request_id
        )
    if accepted_types is not None and message_type not in accepted_types:
        raise ProtocolError(
            UNKNOWN_TYPE,
            f"{message_type} is not a message this peer takes; it takes {sorted(accepted_types)}",
            "type",
            request_id,
        )
    try:
        message = _build(cls, header)
        payloads = [memoryview(frame).cast("B") for frame in frames[1:]]
        return message, _check_payloads(message, payloads, limits)
    except ProtocolError as error:
        # A field or a part refused still names the request and the job (a client waiting for its Submit's answer,
        # or for a job's result, gets it).
        error.request_id = error.request_id or request_id
        job_id = header.get("job_id")
        if message_type in JOB_ENDING_TYPES and isinstance(job_id, str):
            error.job_id = job_id
        raise


def _unpack(raw_header: bytes, limits: Limits) -> dict[str, Any]:
    try:
        header = msgpack.unpackb(
            raw_header,
            raw=False,
            strict_map_key=True,
            max_str_len=limits.max_header_bytes,
            max_bin_len=0,
            max_ext_len=0,
            max_array_len=MAX_HEADER_LIST_ITEMS,
            max_map_len=MAX_HEADER_MAP_ENTRIES,
        )
    except Exception as error:  # msgpack raises several unrelated types for malformed input
        raise ProtocolError(
            BAD_MESSAGE,
            "the header is not valid msgpack, or holds binary data or more list items or map entries than "
            f"{MAX_HEADER_LIST_ITEMS} and {MAX_HEADER_MAP_ENTRIES} ({type(error).__name__}: {error})",
        ) from error
    if not isinstance(header, dict):
        raise ProtocolError(BAD_MESSAGE, f"the header must be a map, got {type(header).__name__}")
    _check_plain(header)
    return header


def _check_plain(header: dict[str, Any]) -> None:
    """Only strings as keys, no binary or extension values, and no more items than `decode` reads, at any depth:
    binary data travels as parts. (msgpack's length limits of 0 still let an empty bin or ext through.)"""
    pending: list[Any] = [header]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                raise ProtocolError(BAD_MESSAGE, "header map keys must be strings")
            if len(value) > MAX_HEADER_MAP_ENTRIES:
                raise ProtocolError(
                    BAD_MESSAGE, f"a header map has {len(value)} entries, more than {MAX_HEADER_MAP_ENTRIES}"
                )
            pending.extend(value.values())
        elif isinstance(value, list | tuple):  # a tuple is packed as a list
            if len(value) > MAX_HEADER_LIST_ITEMS:
                raise ProtocolError(
                    BAD_MESSAGE, f"a header list has {len(value)} items, more than {MAX_HEADER_LIST_ITEMS}"
                )
            pending.extend(value)
        elif isinstance(value, bytes | bytearray | msgpack.ExtType | msgpack.Timestamp):
            raise ProtocolError(
                BAD_MESSAGE, f"the header holds a {type(value).__name__} value; binary data travels as a part"
            )


def _build(cls: type[Message], header: dict[str, Any]) -> Message:
    hints = typing.get_type_hints(cls)
    known = {item.name: item for item in fields(cls)}
    unknown = sorted(set(header) - set(known))
    if unknown:
        raise ProtocolError(INVALID_FIELD, f"{cls.TYPE}: unknown field {unknown[0]!r}", unknown[0])
    values = {}
    for name, item in known.items():
        if name not in header:
            if item.default is MISSING and item.default_factory is MISSING:
                raise ProtocolError(INVALID_FIELD, f"{cls.TYPE}: missing field {name!r}", name)
            continue
        values[name] = _coerce(header[name], hints[name], f"{name}", cls.TYPE)
    return cls(**values)


def _coerce(value: Any, annotation: Any, name: str, message_type: str) -> Any:
    """Check `value` against a field annotation; returns the typed value (ArraySpec for specs)."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _coerce(value, inner, name, message_type)
    if annotation is ArraySpec:
        return _array_spec(value, name, message_type)
    if annotation is Any:
        return value
    expected = origin or annotation
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected in (int, float))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ProtocolError(
            INVALID_FIELD,
            f"{message_type}: field {name!r} must be {_type_name(annotation)}, got {type(value).__name__}",
            name,
        )
    if expected is float and not math.isfinite(value):
        raise ProtocolError(INVALID_FIELD, f"{message_type}: field {name!r} must be a finite number, got {value}", name)
    if expected is list:
        (item_type,) = typing.get_args(annotation) or (Any,)
        return [_coerce(item, item_type, f"{name}[{index}]", message_type) for index, item in enumerate(value)]
    if expected is dict and not all(isinstance(key, str) for key in value):
        raise ProtocolError(INVALID_FIELD, f"{message_type}: field {name!r} must have string keys", name)
    return value


def _array_spec(value: Any, name: str, message_type: str) -> ArraySpec:
    if not isinstance(value, dict) or set(value) != {"shape", "dtype"}:
        raise ProtocolError(INVALID_FIELD, f"{message_type}: {name!r} must be a map with shape and dtype", name)
    shape, dtype = value["shape"], value["dtype"]
    if not isinstance(shape, list) or not 1 <= len(shape) <= 4:
        raise ProtocolError(INVALID_FIELD, f"{message_type}: {name}.shape must be a list of 1 to 4 sizes", name)
    if not all(isinstance(size, int) and not isinstance(size, bool) and 0 < size < 2**31 for size in shape):
        raise ProtocolError(
            INVALID_FIELD, f"{message_type}: {name}.shape must hold positive integers, got {shape}", name
        )
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise ProtocolError(INVALID_FIELD, f"{message_type}: {name}.dtype must be one of {sorted(DTYPE_SIZES)}", name)
    return ArraySpec(tuple(shape), dtype)


def _check_payloads(message: Message, payloads: list[memoryview], limits: Limits) -> dict[str, memoryview]:
    declared = _declared_parts(message)
    if len(payloads) > len(declared):
        raise ProtocolError(
            BAD_MESSAGE,
            f"{message.TYPE}: {len(payloads)} binary parts came for {len(declared)} declared "
            f"({', '.join(declared) or 'none'})",
        )
    missing = list(declared)[len(payloads) :]
    if missing:
        raise ProtocolError(
            BAD_MESSAGE, f"{message.TYPE}: {missing[0]} is declared but no binary part came for it", missing[0]
        )
    for (name, spec), payload in zip(declared.items(), payloads, strict=True):
        if name in VIDEO_FIELDS:
            _check_video_shape(spec, name, limits)
        if spec.nbytes != payload.nbytes:
            raise ProtocolError(
                BAD_MESSAGE,
                f"{message.TYPE}: {name} declares shape {list(spec.shape)} ({spec.nbytes} bytes) but "
                f"{payload.nbytes} bytes came",
                name,
            )
    return dict(zip(declared, payloads, strict=True))


def _check_video_shape(spec: ArraySpec, name: str, limits: Limits) -> None:
    if len(spec.shape) != 4 or spec.shape[3] != 3:
        raise ProtocolError(
            INVALID_FIELD, f"{name}.shape must be [frames, height, width, 3], got {list(spec.shape)}", name
        )
    frames, height, width, _ = spec.shape
    for label, value, limit in (
        ("frames", frames, limits.max_frames),
        ("height", height, limits.max_height),
        ("width", width, limits.max_width),
    ):
        if value > limit:
            raise ProtocolError(TOO_LARGE, f"{name}: {value} {label} exceed the server's limit of {limit}", name)


def _plain(value: Any) -> Any:
    if isinstance(value, ArraySpec):
        return {"shape": list(value.shape), "dtype": value.dtype}
    if isinstance(value, tuple):
        return list(value)
    return value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))
