"""safetensors files read as private memory mappings: their pages are file-backed (reclaimable under a memory limit),
not a private copy of the file."""

from __future__ import annotations

import ctypes
import json
import mmap
import struct
from pathlib import Path

import torch

SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
                      "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}
_LIBC = ctypes.CDLL(None, use_errno=True)


def read_header(path: Path) -> tuple[int, dict]:
    """A safetensors file's JSON header and its size in bytes (it follows the 8-byte size; the data follows it)."""
    with open(path, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        return header_size, json.loads(handle.read(header_size))


def tensor_offset(path: Path, name: str) -> int:
    """Where tensor `name`'s data starts in a safetensors file, in bytes."""
    header_size, header = read_header(path)
    return 8 + header_size + header[name]["data_offsets"][0]


def map_safetensors(path: Path, *, random_access: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as views of one private mapping of it: no file descriptor is held (a set may
    have thousands of files), and the file is unmapped once the last view is dropped. ValueError when the file is
    shorter or longer than its header says. `random_access` turns read-ahead off (for scattered row reads)."""
    header_size, header = read_header(path)
    size = path.stat().st_size
    entries = {name: info for name, info in header.items() if name != "__metadata__"}
    data_end = 8 + header_size + max((info["data_offsets"][1] for info in entries.values()), default=0)
    if data_end != size:
        raise ValueError(f"{path} holds {size} bytes, its header describes {data_end}")
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    advice = mmap.MADV_RANDOM if random_access else mmap.MADV_SEQUENTIAL
    _LIBC.madvise(ctypes.c_void_p(storage.data_ptr()), ctypes.c_size_t(storage.nbytes()), advice)
    bytes_F = torch.empty(0, dtype=torch.uint8).set_(storage)
    tensors = {}
    for name, info in entries.items():
        begin, end = info["data_offsets"]
        data = bytes_F[8 + header_size + begin : 8 + header_size + end]
        tensors[name] = data.view(SAFETENSORS_DTYPES[info["dtype"]]).view(info["shape"])
    return tensors


def release_pages(view: torch.Tensor) -> None:
    """Drop this mapping's page-table entries (the pages stay in the page cache): the kernel maps pages around each one
    read (fault-around, which MADV_RANDOM does not stop), so without this a mapping held across reads would map most
    of its file, counted in resident memory and harder to reclaim under a memory limit."""
    storage = view.untyped_storage()
    _LIBC.madvise(ctypes.c_void_p(storage.data_ptr()), ctypes.c_size_t(storage.nbytes()), mmap.MADV_DONTNEED)
