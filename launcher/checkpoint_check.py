"""Start-up checks of what an engine reads from a local checkpoint, each failure one line naming file and field.

An engine that meets a damaged shard or a bad generation default fails late and obscurely: a
raw SafetensorError traceback after minutes of loading, or a server that starts and then refuses
every request because its default top_k is -7. These checks read only the safetensors headers
(a few kilobytes per shard, never the tensor data) and generation_config.json, so they run in
the preflight, before anything starts.

safetensors layout: 8 bytes little-endian header length N, N bytes of JSON header
({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}), then the tensor
data; offsets count from the start of the data, and the file ends where the last tensor ends.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from qwen35.planner.errors import InputError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
GENERATION_CONFIG = "generation_config.json"
_HEADER_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library refuses larger headers
# Bytes per element; dtypes not listed (sub-byte FP4/FP6 packings) are checked for bounds only.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_SHARD_HINT = "the shard is damaged or incomplete: download it again, or write the checkpoint again"


def _damaged(path: Path, problem: str) -> InputError:
    return InputError(f"{path}: {problem}", _SHARD_HINT)


def shard_files(root: Path) -> dict[Path, set[str]]:
    """The shards a checkpoint's index names, each with the tensors it should hold (one unindexed file: none)."""
    index_path = root / INDEX_FILE
    if not index_path.is_file():
        single = root / SINGLE_FILE
        return {single: set()} if single.is_file() else {}
    index = _read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InputError(f"{index_path}: weight_map: expected a mapping of tensor names to shard files",
                         "download the index again, or write the checkpoint again")
    shards: dict[Path, set[str]] = {}
    for name, file in weight_map.items():
        shards.setdefault(root / file, set()).add(name)
    for path in shards:
        if not path.is_file():
            raise InputError(f"{path}: missing (named by {INDEX_FILE})", _SHARD_HINT)
    return shards


def check_shard(path: Path, expected: set[str] = frozenset()) -> None:
    """InputError when `path` is not a whole safetensors file, or lacks a tensor its index puts in it."""
    size = path.stat().st_size
    if size == 0:
        raise _damaged(path, "the file is empty")
    if size < _HEADER_LENGTH_BYTES:
        raise _damaged(path, f"not a safetensors file: {size} bytes, too short for its header length")
    with path.open("rb") as file:
        (header_bytes,) = struct.unpack("<Q", file.read(_HEADER_LENGTH_BYTES))
        if header_bytes > min(_MAX_HEADER_BYTES, size - _HEADER_LENGTH_BYTES):
            raise _damaged(path, f"not a safetensors file (or cut short): its header length reads {header_bytes} "
                                 f"bytes, the file has {size}")
        raw = file.read(header_bytes)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise _damaged(path, "not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise _damaged(path, "not a safetensors file: its header is not a JSON object")
    data_bytes = size - _HEADER_LENGTH_BYTES - header_bytes
    end_of_data = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        end_of_data = max(end_of_data, _check_tensor(path, name, entry, data_bytes))
    if end_of_data < data_bytes:
        raise _damaged(path, f"{data_bytes - end_of_data} bytes after the last tensor (not written by a safetensors writer)")
    missing = sorted(expected - header.keys())
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise _damaged(path, f"{INDEX_FILE} puts {missing[0]}{more} in this shard, its header has no such tensor")


def _check_tensor(path: Path, name: str, entry: Any, data_bytes: int) -> int:
    """The end offset of one tensor's data, after checking its entry against the file."""
    if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list) or \
            not isinstance(entry.get("data_offsets"), list) or len(entry["data_offsets"]) != 2:
        raise _damaged(path, f"{name}: header entry lacks dtype, shape or data_offsets")
    begin, end = entry["data_offsets"]
    if not all(isinstance(n, int) and n >= 0 for n in (begin, end, *entry["shape"])) or end < begin:
        raise _damaged(path, f"{name}: bad shape {entry['shape']} or data_offsets {entry['data_offsets']}")
    if end > data_bytes:
        raise _damaged(path, f"cut short: {name} ends at byte {end} of the data, the file holds {data_bytes}")
    element = DTYPE_BYTES.get(entry.get("dtype"))
    if element is not None and end - begin != math.prod(entry["shape"]) * element:
        raise _damaged(path, f"{name}: {entry['dtype']} {entry['shape']} needs "
                             f"{math.prod(entry['shape']) * element} bytes, data_offsets give {end - begin}")
    return end


# generation_config.json keys an engine applies to every request that does not set its own:
# (kind, low, high, low inclusive, what the range means). The ranges are those the bundled
# runtime's sampler accepts (runtime/engine/sampling.py SamplingParams.validate), which SGLang
# and vLLM accept too.
_SAMPLING_RULES = {
    "temperature": ("number", 0.0, 2.0, True, "a number in [0, 2]"),
    "top_p": ("number", 0.0, 1.0, False, "a number in (0, 1]"),
    "top_k": ("integer", -1, None, True, "an integer >= 1, or 0 / -1 for off"),
    "min_p": ("number", 0.0, 1.0, True, "a number in [0, 1]"),
    "repetition_penalty": ("number", 0.0, 2.0, False, "a number in (0, 2] (1 = off)"),
    "presence_penalty": ("number", -2.0, 2.0, True, "a number in [-2, 2]"),
    "frequency_penalty": ("number", -2.0, 2.0, True, "a number in [-2, 2]"),
    "max_new_tokens": ("integer", 1, None, True, "an integer >= 1"),
    "max_length": ("integer", 1, None, True, "an integer >= 1"),
}
_TOKEN_ID_KEYS = ("eos_token_id", "bos_token_id", "pad_token_id")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text", "write it again as UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})",
                         "fix the JSON, or download the file again") from None


def _fits(value: Any, kind: str, low, high, low_inclusive: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind == "number" else int):
        return False
    if not math.isfinite(value):
        return False
    above = value >= low if low_inclusive else value > low
    return above and (high is None or value <= high)


def check_generation_config(root: Path) -> None:
    """InputError naming the key when generation_config.json is unreadable or holds an unusable default."""
    path = root / GENERATION_CONFIG
    if not path.is_file():
        return
    config = _read_json(path)
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a JSON object of generation settings", "fix the file, or remove it")
    hint = "fix or remove that key: the engine applies it to every request that does not set its own"
    for key, (kind, low, high, low_inclusive, allowed) in _SAMPLING_RULES.items():
        value = config.get(key)
        if value is not None and not _fits(value, kind, low, high, low_inclusive):
            raise InputError(f"{path}: {key}: expected {allowed}, got {json.dumps(value)}", hint)
    if "do_sample" in config and not isinstance(config["do_sample"], bool):
        raise InputError(f"{path}: do_sample: expected true or false, got {json.dumps(config['do_sample'])}", hint)
    for key in _TOKEN_ID_KEYS:
        value = config.get(key)
        ids = value if isinstance(value, list) else [value]
        if value is not None and not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise InputError(f"{path}: {key}: expected a token id (an integer >= 0) or a list of them, "
                             f"got {json.dumps(value)}", hint)


def check_checkpoint(root: str | Path) -> int:
    """Check a local checkpoint's shards and generation config; the number of shards checked."""
    root = Path(root).expanduser()
    shards = shard_files(root)
    for path, expected in shards.items():
        try:
            check_shard(path, expected)
        except OSError as error:
            raise InputError(f"{path}: cannot read it ({error.strerror or error})", "check its permissions") from None
    check_generation_config(root)
    return len(shards)
