"""What the checkpoint adapters share: errors that name the file and key, safetensors folders,
device/dtype choice."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch



class CheckpointError(ValueError):
    """A checkpoint folder is incomplete or malformed; the message names the file and key."""


def read_json(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint folder {folder} lacks {name}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def require_field(data: dict[str, Any], key: str, file: str) -> Any:
    if key not in data:
        raise CheckpointError(f"{file} lacks the field '{key}'")
    return data[key]


@dataclass(frozen=True)
class TensorFolder:
    """The tensors of a (sharded) safetensors checkpoint, by key, with the file each came from."""

    tensors: dict[str, torch.Tensor]
    files: dict[str, str]

    def file_of(self, key: str) -> str:
        return self.files.get(key, "?")


@contextlib.contextmanager
def open_safetensors(path: Path):
    """safetensors' `safe_open` (PyTorch tensors) whose failures on a truncated or corrupt file
    ("header too large", "incomplete metadata", ...) become one CheckpointError naming the file."""
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file, truncated or corrupt ({exc})") from None
    with handle as f:
        try:
            yield f
        except SafetensorError as exc:
            raise CheckpointError(f"{path}: corrupt tensor data ({exc})") from None


def shard_map(folder: Path) -> dict[str, list[str]]:
    """shard file -> the keys the index assigns to it (a single file maps to []).

    Fails, naming the file, when the index lists a shard that is not in the folder, that is not a
    .safetensors file (pickle weights -- .bin, .pt -- can run code when loaded and are refused),
    whose header is unreadable (truncated, corrupt) or that lacks a tensor the index assigns to it.
    """
    if (folder / "model.safetensors.index.json").is_file():
        index = read_json(folder, "model.safetensors.index.json")
        weight_map = require_field(index, "weight_map", "model.safetensors.index.json")
        if not isinstance(weight_map, dict):
            raise CheckpointError("model.safetensors.index.json: weight_map must map tensor keys to shard files")
        by_file: dict[str, list[str]] = {}
        for key, fname in weight_map.items():
            if not isinstance(fname, str) or not fname.endswith(".safetensors") or Path(fname).name != fname:
                raise CheckpointError(
                    f"model.safetensors.index.json assigns '{key}' to {fname!r}, which is not a .safetensors "
                    "file in the folder (pickle weights such as .bin / .pt are not loaded: they can run code)"
                )
            by_file.setdefault(fname, []).append(key)
    elif (folder / "model.safetensors").is_file():
        by_file = {"model.safetensors": []}
    else:
        raise CheckpointError(
            f"checkpoint folder {folder} has neither model.safetensors.index.json nor model.safetensors"
        )
    for fname, keys in sorted(by_file.items()):
        if not (folder / fname).is_file():
            raise CheckpointError(
                f"missing shard {fname} in {folder}: model.safetensors.index.json assigns "
                f"{len(keys)} tensors to it (e.g. '{keys[0]}')"
            )
    for fname, keys in sorted(by_file.items()):
        with open_safetensors(folder / fname) as f:  # reads the header only
            present = set(f.keys())
        absent = [k for k in keys if k not in present]
        if absent:
            raise CheckpointError(f"{fname} lacks tensor '{absent[0]}' that the index assigns to it")
    return by_file


def load_safetensors_folder(folder: Path) -> TensorFolder:
    """Read `model.safetensors.index.json` + its shards, or a single `model.safetensors`.

    Every shard the index lists must exist and hold exactly the keys the index assigns to it.
    """
    tensors: dict[str, torch.Tensor] = {}
    files: dict[str, str] = {}
    for fname, keys in sorted(shard_map(folder).items()):
        with open_safetensors(folder / fname) as f:
            wanted = keys or sorted(f.keys())
            for key in wanted:
                tensors[key] = f.get_tensor(key)
                files[key] = fname
    return TensorFolder(tensors, files)


def pick_device_dtype(device: str | torch.device | None, dtype: torch.dtype | str | None) -> tuple[torch.device, torch.dtype]:
    """CUDA + bf16 when a GPU is present, else CPU + float32, unless told otherwise."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, str):
        if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
            raise ValueError(f"unknown dtype '{dtype}'; use e.g. 'float32' or 'bfloat16'")
        dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dev, dtype


def none_if_empty(value: str | None) -> str | None:
    """ROS string parameters cannot be None: an empty string means "not set"."""
    return None if value is None or value == "" else value
