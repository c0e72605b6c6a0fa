"""TNEF (``winmail.dat``): list the files inside, after checking tnefparse cannot be made to hang.

Job: turn the bytes of a TNEF attachment into ``(name, data)`` pairs, including the files of
embedded messages, for ``mailparse`` to sniff like any other attachment. Names are returned as
found (untrusted, unsanitised): the caller sanitises them for display and never uses them as
paths.

May touch: nothing but the bytes given. No filesystem, no network.

Why a structural check before tnefparse (1.4.0): its ``decode_mapi`` loops ``range(n)`` over
32-bit counts read from the file and keeps looping (logging a warning per turn) after the data
ends, so a 30-byte file with a property count of 0xFFFFFFFF runs for hours (50 million turns
measured at ~400 s); multi-valued properties of fixed size do the same without the warning.
Each TNEF object is also parsed from a fresh copy of the rest of the file (quadratic copying).
``check_structure`` walks the same fields the same way, bounds every count by the bytes left
and the copying by a budget, and refuses before tnefparse runs.

Known limits: RTF bodies and OLE objects are not decoded (they are not invoice candidates);
attachments whose data is an embedded message yield that message's files, not the message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from tnefparse.tnef import TNEF

SIGNATURE = b"\x78\x9f\x3e\x22"
_IMESSAGE_SIG = b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
_MAPI_OBJECTS = {0x9003, 0x9005}  # ATTMAPIPROPS, ATTATTACHMENT: decoded with decode_mapi
_RECIPIENT_TABLE = 0x9004
_ATTACH_DATA_OBJ = 0x3701
_FIXED_SIZES = {0x0002: 2, 0x000B: 2, 0x0003: 4, 0x0004: 4, 0x000A: 4, 0x0005: 8, 0x0007: 8,
                0x0006: 8, 0x0014: 8, 0x0040: 8, 0x0048: 16}
_VARIABLE = {0x0000, 0x000D, 0x001E, 0x001F, 0x0102}
_SLACK = 1_000  # counts may overshoot the data a little in real files; each extra turn is cheap
MAX_OBJECTS = 5_000
MAX_COPY_BYTES = 4 * 1024**3  # sum of tnefparse's per-object copies (~1 s of memcpy)


class TnefError(Exception):
    """The TNEF cannot be read safely; str(exc) says why (recorded as a defect by the caller)."""


@dataclass(frozen=True)
class TnefFile:
    name: str  # as found in the TNEF: untrusted display text, may be ""
    data: bytes


def extract_files(data: bytes, max_depth: int = 5, max_files: int = 100
                  ) -> tuple[list[TnefFile], list[str]]:
    """All files in a TNEF blob, embedded messages' files included, in order of appearance, and
    notes on what looked wrong (tnefparse only logs bad checksums; truncated data passes)."""
    check_structure(data, max_depth)
    try:
        parsed = TNEF(data)
    except Exception as exc:  # tnefparse raises whatever struct/codec/index error it hits
        raise TnefError(f"unreadable TNEF ({type(exc).__name__})") from exc
    files: list[TnefFile] = []
    _collect(parsed, files, max_files)
    bad = sum(not getattr(obj, "good_checksum", True) for obj in parsed.objects)
    notes = [f"{bad} TNEF object(s) with a bad checksum (truncated or damaged)"] if bad else []
    return files, notes


def _collect(parsed: Any, files: list[TnefFile], max_files: int) -> None:
    for attachment in parsed.attachments:
        if len(files) >= max_files:
            raise TnefError(f"more than {max_files} files inside the TNEF")
        embedded = getattr(attachment, "embed", None)
        if embedded is not None:
            _collect(embedded, files, max_files)
            continue
        files.append(TnefFile(_name_of(attachment), bytes(attachment.data or b"")))


def _name_of(attachment: Any) -> str:
    try:
        name = attachment.long_filename() or attachment.name
    except Exception:
        return ""
    if isinstance(name, bytes):
        return name.decode("utf-8", "replace").strip("\x00")
    return str(name)


def check_structure(data: bytes, max_depth: int, depth: int = 0) -> None:
    """Raise TnefError unless tnefparse's loops over ``data`` are bounded by its size."""
    if depth > max_depth:
        raise TnefError("embedded messages nested too deep")
    if len(data) < 6 or not data.startswith(SIGNATURE):
        raise TnefError("not a TNEF stream (bad signature)")
    offset, objects, copied = 6, 0, 0
    while offset + 12 < len(data):  # tnefparse's own loop condition
        objects += 1
        copied += len(data) - offset
        if objects > MAX_OBJECTS or copied > MAX_COPY_BYTES:
            raise TnefError("TNEF too complex (object count)")
        name = _u16(data, offset + 1)
        length = min(len(data) - offset, _u32(data, offset + 5) + 11)
        body = data[offset + 9 : offset + length - 2]
        if name in _MAPI_OBJECTS:
            _check_mapi(body, 0, max_depth, depth)
        elif name == _RECIPIENT_TABLE and len(body) >= 4:
            offset_in = 4
            for _ in range(_bounded(_u32(body, 0), len(body), 4)):
                offset_in = _check_mapi(body, offset_in, max_depth, depth)
                if offset_in >= len(body):
                    break
        offset += length


def _check_mapi(data: bytes, offset: int, max_depth: int, depth: int) -> int:
    """Mirror of tnefparse.mapi.decode_mapi's reads; returns the offset it would stop at."""
    if offset + 4 > len(data):
        return len(data)  # tnefparse raises here; the caller's try turns that into TnefError
    count = _bounded(_u32(data, offset), len(data) - offset, 4)
    offset += 4
    try:
        for _ in range(count):
            if offset >= len(data):
                break
            kind, name = _u16(data, offset), _u16(data, offset + 2)
            offset += 4
            if name >= 0x8000:  # named property: GUID, then an id or a name
                offset += 16
                offset += 8 if _u32(data, offset) == 0 else 8 + _pad4(_u32(data, offset + 4))
            values = None
            if kind & 0x1000:
                kind ^= 0x1000
                values = _bounded(_u32(data, offset), len(data) - offset, 2)
                offset += 4
            for _ in range(values or 1):
                if kind in _FIXED_SIZES:
                    offset += _FIXED_SIZES[kind]
                elif kind in _VARIABLE:
                    offset = _check_variable(data, offset, values is not None, name,
                                             max_depth, depth)
                else:
                    return offset  # tnefparse raises ValueError and stops decoding
                if offset > len(data):
                    return offset
            if (values or 1) % 2 and kind in (0x0002, 0x000B):
                offset += 2
    except struct.error:
        return len(data)
    return offset


def _check_variable(data: bytes, offset: int, multi: bool, name: int, max_depth: int,
                    depth: int) -> int:
    items = 1
    if not multi:
        items = _bounded(_u32(data, offset), len(data) - offset, 4)
        offset += 4
    parts: list[bytes] = []
    for _ in range(items):
        length = _pad4(_u32(data, offset))
        parts.append(data[offset + 4 : offset + 4 + length].rstrip(b"\x00"))
        offset += 4 + length
    joined = b"".join(parts)  # what tnefparse hands to TNEF() for an embedded message
    if name == _ATTACH_DATA_OBJ and joined.startswith(_IMESSAGE_SIG):
        check_structure(joined[len(_IMESSAGE_SIG) :], max_depth, depth + 1)
    return offset


def _bounded(count: int, remaining: int, min_size: int) -> int:
    if count > remaining // min_size + _SLACK:
        raise TnefError(f"TNEF count {count} larger than the data can hold")
    return count


def _pad4(length: int) -> int:
    return length + (-length % 4)


def _u16(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", data, offset)[0])


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0])
