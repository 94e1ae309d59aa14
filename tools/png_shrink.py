#!/usr/bin/env python3
"""Recompress the PNGs ebt_lm writes (stored, uncompressed deflate blocks)
with zlib level 9, for committing them: png_shrink.py IN.png OUT.png.
Pixels are unchanged: the filtered scanlines are only re-deflated."""
import struct
import sys
import zlib


def chunks(data):
    pos = 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + n]
        pos += 12 + n


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def main(src, dst):
    data = open(src, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{src}: not a PNG")
    parts = list(chunks(data))
    raw = zlib.decompress(b"".join(body for kind, body in parts if kind == b"IDAT"))
    out = [data[:8]]
    for kind, body in parts:
        if kind == b"IDAT":
            if len(out) == 1 or out[-1][4:8] != b"IDAT":
                out.append(chunk(b"IDAT", zlib.compress(raw, 9)))
        else:
            out.append(chunk(kind, body))
    open(dst, "wb").write(b"".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: png_shrink.py IN.png OUT.png")
    main(sys.argv[1], sys.argv[2])
