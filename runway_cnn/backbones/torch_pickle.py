"""Read a PyTorch ``state_dict`` file into numpy arrays without importing torch.

Both on-disk formats of ``torch.save`` are handled:

* legacy (torch < 1.6): five consecutive pickles in one file — magic number, protocol version,
  system info, the object (whose persistent ids name storages), the list of storage keys — then
  each storage's raw bytes, preceded by its element count as a little-endian int64;
* zip (torch >= 1.6): ``<archive>/data.pkl`` plus one raw file ``<archive>/data/<key>`` per storage.

Only the globals a tensor state dict needs are allowed when unpickling, so a file cannot run code.
"""
from __future__ import annotations

import collections
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from runway_cnn.errors import CheckpointError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass
class _Storage:
    """A storage named by the pickle; its bytes are read after (legacy) or beside (zip) it."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _StorageView:
    """A legacy view into part of another storage."""

    base: _Storage
    offset: int
    numel: int

    @property
    def data(self) -> np.ndarray:
        assert self.base.data is not None
        return self.base.data[self.offset : self.offset + self.numel]


@dataclass
class _TensorRef:
    """A tensor whose storage bytes may not have been read yet."""

    storage: _Storage | _StorageView
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.data
        if not self.shape:
            return np.array(flat[self.offset])
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
        )
        return np.array(view)  # copy: own the memory, contiguous


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> _TensorRef:
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_unused):
    return data


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co. inside persistent ids."""

    def __init__(self, name: str):
        self.dtype = STORAGE_DTYPES[name]


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles tensors as ``_TensorRef`` and refuses any other global."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid: Any) -> _Storage | _StorageView:
        kind, storage_type, key, _location, numel, *view = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, int(numel))
        storage = self.storages[key]
        if view and view[0] is not None:  # legacy view: (view_key, offset, view_size)
            _view_key, offset, view_numel = view[0]
            return _StorageView(storage, int(offset), int(view_numel))
        return storage


def _read_legacy(file: BinaryIO) -> tuple[Any, dict[str, _Storage]]:
    if pickle.load(file) != LEGACY_MAGIC_NUMBER:
        raise pickle.UnpicklingError("not a PyTorch file (bad magic number)")
    if pickle.load(file) != LEGACY_PROTOCOL_VERSION:
        raise pickle.UnpicklingError("unsupported PyTorch legacy protocol version")
    sys_info = pickle.load(file)
    if not sys_info.get("little_endian", True):
        raise pickle.UnpicklingError("big-endian PyTorch files are not supported")
    storages: dict[str, _Storage] = {}
    obj = _StateDictUnpickler(file, storages).load()
    for key in pickle.load(file):
        storage = storages[str(key)]
        numel = int(np.frombuffer(file.read(8), "<i8")[0])
        raw = file.read(numel * storage.dtype.itemsize)
        if len(raw) != numel * storage.dtype.itemsize:
            raise pickle.UnpicklingError(f"file ends inside storage {key}")
        storage.data = np.frombuffer(raw, storage.dtype)
    return obj, storages


def _read_zip(path: Path) -> tuple[Any, dict[str, _Storage]]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise pickle.UnpicklingError("zip file has no data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        with archive.open(pickles[0]) as file:
            obj = _StateDictUnpickler(file, storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storage.data = np.frombuffer(raw, storage.dtype)[: storage.numel]
    return obj, storages


def _as_state_dict(obj: Any) -> dict[str, np.ndarray]:
    """Unwraps ``{"state_dict": ...}`` checkpoints and turns tensor refs into arrays."""
    for wrapper_key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper_key), dict):
            obj = obj[wrapper_key]
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"expected a state dict, found {type(obj).__name__}")
    return {
        str(name): value.to_numpy() for name, value in obj.items() if isinstance(value, _TensorRef)
    }


def load_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a ``torch.save``-d state dict (legacy or zip format) as ``{name: numpy array}``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"PyTorch weights file not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            obj, _ = _read_zip(path)
        else:
            with path.open("rb") as file:
                obj, _ = _read_legacy(file)
        return _as_state_dict(obj)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, OSError) as error:
        raise CheckpointError(f"cannot read PyTorch weights file {path}: {error}") from error
