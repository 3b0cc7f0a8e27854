"""A restricted unpickler for the official .pkl weights and concept files.

Those files are pickles of plain containers holding NumPy arrays. Only the few
globals needed to rebuild arrays are resolved; anything else (os.system, eval,
an arbitrary class) is refused before it can run.
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
from pathlib import Path

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something other than arrays and plain containers."""


def _numpy_reconstruct():
    try:
        from numpy._core import multiarray  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray
    return multiarray


_MULTIARRAY = _numpy_reconstruct()
try:
    from numpy._core import numeric as _NUMERIC  # NumPy >= 2
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import numeric as _NUMERIC

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _MULTIARRAY._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _MULTIARRAY._reconstruct,
    ("numpy.core.multiarray", "scalar"): _MULTIARRAY.scalar,
    ("numpy._core.multiarray", "scalar"): _MULTIARRAY.scalar,
    # pickle protocol 5 rebuilds arrays from a buffer; protocol 2 encodes bytes with _codecs
    ("numpy.core.numeric", "_frombuffer"): _NUMERIC._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _NUMERIC._frombuffer,
    ("_codecs", "encode"): codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafePickleError(f"the file references '{module}.{name}', which is not allowed")
        return found

    def persistent_load(self, pid):
        raise UnsafePickleError("persistent ids are not allowed")


def safe_loads(data: bytes):
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def safe_load_pickle(path: str | os.PathLike):
    with open(Path(path), "rb") as f:
        return _RestrictedUnpickler(f, encoding="latin1").load()
