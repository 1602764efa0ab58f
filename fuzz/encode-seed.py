#!/usr/bin/env python3
"""Encodes an image as a fuzzer input: u64 file size, then (u64 offset, u32 length, bytes) for each run
of non-zero 512-byte sectors, each run cut to 16 KiB so seeds stay small (structures live at run
starts; the rest is block data). Usage: encode-seed.py IMAGE OUTPUT"""
import struct, sys

data = open(sys.argv[1], "rb").read()
out = [struct.pack("<Q", len(data))]
sector, offset = 512, 0
while offset < len(data):
    if data[offset:offset + sector].strip(b"\0"):
        end = offset
        while end < len(data) and data[end:end + sector].strip(b"\0"):
            end += sector
        kept = min(end - offset, 16384)
        out.append(struct.pack("<QI", offset, kept) + data[offset:offset + kept])
        offset = end
    else:
        offset += sector
open(sys.argv[2], "wb").write(b"".join(out))
