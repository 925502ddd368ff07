"""The few protobuf wire-format pieces otelgw writes by hand (WAL records, google.rpc.Status,
RetryInfo, tempopb responses) where pulling in a generated message type is not worth it."""

from __future__ import annotations


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it); ValueError when truncated or too long."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def len_field(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return bytes([field << 3 | 2]) + varint(len(payload)) + payload


def status(code: int, message: str, details: bytes = b"") -> bytes:
    """google.rpc.Status: code = 1, message = 2, details = 3 (already-encoded Any fields)."""
    return b"\x08" + varint(code) + len_field(2, message.encode()) + details
