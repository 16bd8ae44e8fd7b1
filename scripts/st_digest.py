#!/usr/bin/env python3
"""Prints one line per tensor of a safetensors file: name, dtype, shape and the SHA-256 of
its bytes, sorted by name; then the metadata keys and a digest of each value. Two files
hold the same tensors when these lines agree, whatever order the writer laid them out in.

    scripts/st_digest.py FILE [--no-meta]

Python standard library only (no numpy, no safetensors package)."""
import hashlib
import json
import struct
import sys


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__)
    with open(args[0], "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    meta = header.pop("__metadata__", {})
    for name in sorted(header):
        e = header[name]
        b, end = e["data_offsets"]
        digest = hashlib.sha256(data[b:end]).hexdigest()
        print(f"{name} {e['dtype']} {e['shape']} {digest}")
    if "--no-meta" not in sys.argv:
        for k in sorted(meta):
            print(f"meta {k} {hashlib.sha256(meta[k].encode()).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
