"""A checkpoint's engine state (``state/``, written by accelerate's ``save_state``), checked before a resume reads it.

accelerate reads ``state/`` with ``torch.load``: the optimizer state and the RNG states are pickles, and a
pickle can run any code while it is read. accelerate (1.16) asks torch for its ``weights_only`` unpickler,
which refuses such code, but it skips an RNG-state file it cannot read with an INFO log line (the run would
go on with other random states), and torch.distributed.checkpoint reads the index of FSDP's sharded state
(``.metadata``) with the plain unpickler. So before a resume every file of ``state/`` is read here by a
loader that cannot run code, and the first one that is not plain data stops the resume with its name:

    *.safetensors, *.json   formats without code
    *.distcp                torch.distributed.checkpoint's data: raw tensor bytes, objects read under weights_only
    .metadata               its index: unpickled knowing only the index's own classes (:func:`_index_classes`)
    anything else           a torch archive, unpickled with weights_only and accelerate's numpy allowance (the RNG
                            states); memory-mapped, so the tensors are not read
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

_DATA_SUFFIXES = (".safetensors", ".json", ".distcp")
_REFUSED = re.compile(r"GLOBAL ([\w.]+)")  # torch names the global in its refusals ("unsupported GLOBAL os.system")


class UntrustedState(ValueError):
    """A file of a checkpoint's ``state/`` is not plain data: reading it could run code. Nothing in it ran."""


def check_engine_state(folder: Path) -> None:
    """Raise :class:`UntrustedState` for the first file under ``folder`` that is not plain data."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix in _DATA_SUFFIXES:
            continue
        problem = _index_problem(path) if path.name == ".metadata" else _archive_problem(path)
        if problem is not None:
            raise UntrustedState(
                f"{path}: refused to resume: {problem}; nothing in it was executed. Resume only checkpoints your "
                "own runs wrote, or start a new run from this checkpoint's weights (model.checkpoint: its "
                "model.safetensors)")


def _archive_problem(path: Path) -> str | None:
    """Why ``path`` is not a torch archive of plain data (tensors, numbers, strings, containers), or None."""
    from accelerate.utils.other import TORCH_SAFE_GLOBALS  # what accelerate's own loader allows (numpy RNG states)

    if not zipfile.is_zipfile(path):
        return "it is not a torch archive (accelerate writes one with torch.save) and may be a pickle that runs code"
    try:
        with torch.serialization.safe_globals(TORCH_SAFE_GLOBALS):
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        found = _REFUSED.search(str(error))
        called = found.group(1) if found else "Python objects"
        return f"its pickle calls {called}, which could run code (engine state holds only tensors and plain data)"
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        return f"it is truncated or corrupt ({str(error).splitlines()[0]})"
    return None


def _index_problem(path: Path) -> str | None:
    """Why ``path`` is not a torch.distributed.checkpoint index made of its own classes only, or None."""
    try:
        with path.open("rb") as handle:
            _IndexUnpickler(handle, _index_classes()).load()
    except pickle.UnpicklingError as error:
        return str(error)
    except (EOFError, AttributeError, ValueError, TypeError, OSError) as error:
        return f"it is not a torch.distributed.checkpoint index ({error})"
    return None


def _index_classes() -> dict[str, set[str]]:
    """The globals a torch.distributed.checkpoint ``.metadata`` pickle names (torch 2.13): its dataclasses,
    the storage layout, tensor sizes and dtypes, and the checkpoint's path. None of them runs code."""
    dtypes = {name for name in dir(torch) if isinstance(getattr(torch, name), torch.dtype)}
    return {
        "torch.distributed.checkpoint.metadata": {
            "Metadata", "MetadataIndex", "StorageMeta", "TensorStorageMetadata", "BytesStorageMetadata",
            "ChunkStorageMetadata", "TensorProperties", "_MEM_FORMAT_ENCODING"},
        "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
        "torch.serialization": {"_get_layout"},
        "torch": {"Size", *dtypes},
        "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"},
    }


class _IndexUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global but ``allowed`` ({module: names})."""

    def __init__(self, handle, allowed: dict[str, set[str]]):
        super().__init__(handle)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> object:
        if name not in self.allowed.get(module, set()):
            raise pickle.UnpicklingError(f"its pickle calls {module}.{name}, which could run code (a checkpoint "
                                         "index holds only its own classes, sizes and dtypes)")
        return super().find_class(module, name)
