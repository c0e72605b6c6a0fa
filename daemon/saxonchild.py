"""The child of daemon/schematron_server.py: Saxon, compiled stylesheets cached, serving runs.

Run as ``python -I saxonchild.py`` (isolated: this file imports the standard library and
saxonche only, never facturd). Protocol on stdin/stdout: a request is ``b"R"`` and two blocks
(4-byte big-endian length + bytes): the stylesheet path, the XML; the answer is one status
byte (0: SVRL follows, 1: an error text follows) and one block. A Saxon error is answered and
the child stays; a malformed request or end of input ends it.
"""

from __future__ import annotations

import struct
import sys
from typing import Any, BinaryIO

MAX_BLOCK = 64 * 1024 * 1024  # a request or answer block larger than this is refused
HEAD = struct.Struct(">BI")
LEN = struct.Struct(">I")


def _block(stream: BinaryIO) -> bytes:
    (size,) = LEN.unpack(stream.read(LEN.size))
    if size > MAX_BLOCK:
        raise ValueError(f"request block of {size} bytes refused")
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def serve(stdin: BinaryIO, stdout: BinaryIO) -> int:
    import saxonche

    with saxonche.PySaxonProcessor(license=False) as processor:
        compiler = processor.new_xslt30_processor()
        compiled: dict[str, Any] = {}
        while stdin.read(1) == b"R":
            try:
                path, xml = _block(stdin).decode(), _block(stdin).decode("utf-8")
            except (EOFError, ValueError, struct.error):
                return 2
            try:
                if path not in compiled:
                    compiled[path] = compiler.compile_stylesheet(stylesheet_file=path)
                node = processor.parse_xml(xml_text=xml)
                report = compiled[path].transform_to_string(xdm_node=node)
                status, body = (0, str(report).encode()) if report else (1, b"empty SVRL")
            except Exception as exc:  # report any Saxon failure; the child stays
                status, body = 1, f"{type(exc).__name__}: {exc}".encode()
            stdout.write(HEAD.pack(status, len(body)) + body)
            stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.stdin.buffer, sys.stdout.buffer))
