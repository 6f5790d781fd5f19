"""The IDX file format of MNIST-like datasets (http://yann.lecun.com/exdb/mnist/).

Layout: two zero bytes, a type code, the number of dimensions n, then n
big-endian uint32 sizes, then the values in row-major order (big-endian for
multi-byte types). Files may be gzipped; that is detected from the content
(the gzip magic bytes), not the name.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from dsgd_trainer.data.bundle import DataLoadError

#: IDX type code → numpy dtype (big-endian).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def read_file_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is gzip data. Errors name the file."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise DataLoadError(f"cannot read {path}: {error.strerror or error}") from error
    if content[:2] != GZIP_MAGIC:
        return content
    try:
        return gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as error:
        raise DataLoadError(f"{path} is not a valid gzip file: {error}") from error


def parse_idx(content: bytes, source: str) -> np.ndarray:
    """The array stored in IDX `content`; `source` names the file in errors."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise DataLoadError(
            f"{source} is not an IDX file: it does not start with the IDX magic number "
            f"(got {content[:4].hex() or 'an empty file'})"
        )
    type_code, ndim = content[2], content[3]
    if type_code not in IDX_TYPES:
        raise DataLoadError(f"{source}: unknown IDX type code 0x{type_code:02x}")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataLoadError(f"{source}: truncated IDX header ({len(content)} bytes)")
    shape = tuple(int(size) for size in np.frombuffer(content, ">u4", ndim, offset=4))
    dtype = IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(content) - header_size != expected:
        raise DataLoadError(
            f"{source}: the IDX header announces shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(content) - header_size} bytes after the header; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(content, dtype, offset=header_size).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    """The array in IDX file `path` (gzipped or not). Raises `DataLoadError` naming it."""
    return parse_idx(read_file_bytes(path), str(path))
