"""A MetaImage (``.mha``) header checked before ITK reads it: when the header says ``CompressedData = True``
and the data are not zlib, ITK reads nonsense and the scan is refused as "not a CT (an MR?)", which
points the user the wrong way. Here the data's first bytes are inflated to see that they are zlib.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from ..errors import InputError

#: A MetaImage header is text lines up to ``ElementDataFile``; no real one is longer than this.
HEADER_BYTES = 1 << 16


def check_metaimage_data(path: Path) -> None:
    """Refuse an ``.mha`` whose header promises zlib-compressed data that are not.

    Raises:
        InputError: naming what the header claims, and what to do.
    """
    if path.suffix.lower() != ".mha":
        return
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEADER_BYTES)
    except OSError:
        return  # ITK's reading says what is wrong
    marker = head.find(b"ElementDataFile")
    end = head.find(b"\n", marker)
    if marker < 0 or end < 0 or b"LOCAL" not in head[marker:end]:
        return  # the data lie in another file, or this is no MetaImage header
    fields = dict(line.split("=", 1) for line in head[:marker].decode("latin-1").splitlines() if "=" in line)
    compressed = {k.strip(): v.strip() for k, v in fields.items()}.get("CompressedData", "False")
    if compressed.lower() != "true":
        return
    try:
        zlib.decompressobj().decompress(head[end + 1 :][:4096])
    except zlib.error:
        raise InputError(f"{path} is corrupt: its header says CompressedData = True but its data are not "
                         "zlib-compressed; export the CT again") from None
