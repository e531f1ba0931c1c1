"""Bytes on the wire, built by hand so that they can lie: protobuf fields, gRPC message frames,
HTTP/2 frames and HPACK header blocks (RFC 9113, RFC 7541), for the gateway's fuzz test."""

from __future__ import annotations

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""What an HTTP/2 client sends first, before its SETTINGS frame."""
DATA, HEADERS, SETTINGS = 0, 1, 4
END_STREAM, END_HEADERS = 0x1, 0x4
REPORT_PATH = "/gigafab.health.v1.HealthService/Report"


def varint(value: int) -> bytes:
    """A protobuf base-128 varint of a non-negative ``value``."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def unknown_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field no ReportRequest has (``number`` above its last, 4)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def padded(message: bytes, size: int, number: int = 1000) -> bytes:
    """``message`` followed by an unknown field that makes it exactly ``size`` bytes (at least 6 more than
    the message); the field's length is a 4-byte varint (over-long when small: decoders take it), so
    that every size can be reached."""
    key = varint(number << 3 | 2)
    filler = size - len(message) - len(key) - 4
    length = bytes([filler & 0x7F | 0x80, filler >> 7 & 0x7F | 0x80, filler >> 14 & 0x7F | 0x80, filler >> 21 & 0x7F])
    return message + key + length + b"\0" * filler


def grpc_message(body: bytes, compressed: int = 0, length: int | None = None) -> bytes:
    """A gRPC length-prefixed message; ``length`` other than ``len(body)`` lies."""
    declared = len(body) if length is None else length
    return bytes([compressed]) + declared.to_bytes(4, "big") + body


def frame(kind: int, flags: int, stream: int, payload: bytes, length: int | None = None) -> bytes:
    """An HTTP/2 frame; ``length`` other than ``len(payload)`` lies (24 bits), ``stream`` may set the reserved bit."""
    declared = len(payload) if length is None else length
    return declared.to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def hpack_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer with an N-bit prefix; ``first`` holds the bits of the first byte above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = bytearray([first | limit]), value - limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name: str, value: str) -> bytes:
    """A header as a literal without indexing, new name, no Huffman coding."""
    encoded = [text.encode() for text in (name, value)]
    return b"\0" + b"".join(hpack_integer(len(text), 7) + text for text in encoded)


def report_headers(path: str = REPORT_PATH) -> bytes:
    """The header block of a gRPC call to ``path``."""
    headers = {
        ":method": "POST",
        ":scheme": "https",
        ":path": path,
        ":authority": "localhost",
        "content-type": "application/grpc",
        "te": "trailers",
    }
    return b"".join(hpack_literal(name, value) for name, value in headers.items())


def settings(pairs: list[tuple[int, int]]) -> bytes:
    """A SETTINGS frame (stream 0) with these identifier/value pairs (any 16/32-bit values)."""
    return frame(SETTINGS, 0, 0, b"".join(ident.to_bytes(2, "big") + value.to_bytes(4, "big") for ident, value in pairs))
