"""A checkpoint on disk: where it is (local dir or hub cache), its config and its tensor files.

The Hugging Face layout: config.json (text model under text_config) plus either one
model.safetensors or model.safetensors.index.json whose weight_map names each tensor's
shard. Shard names are read from the index, never guessed. Tensor names are kept in the
multimodal form (`model.language_model.*`); a text-only export (`model.layers.*`, from
Qwen3_5ForCausalLM) is renamed into it so the rest of the loader sees one layout.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from qwen35.planner.errors import InputError
from qwen35.planner.models.config import TEXT_MODEL_TYPES, CheckpointConfig, parse_config
from qwen35.runtime.model.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Text-only exports (Qwen3_5ForCausalLM) carry the text config at the top level.
TEXT_ONLY_TYPES = {text: full for full, text in TEXT_MODEL_TYPES.items()}


@dataclass(frozen=True)
class TensorLocation:
    """Where one tensor lives and what its header says."""

    file: Path
    disk_name: str  # the name inside the shard (differs from ours only for text-only exports)
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype string, e.g. "BF16", "F8_E4M3"


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: its directory, parsed config and every tensor's location."""

    root: Path
    config: CheckpointConfig
    tensors: dict[str, TensorLocation]  # by multimodal-layout name

    @property
    def shards(self) -> list[Path]:
        """The tensor files, in index order."""
        return list(dict.fromkeys(loc.file for loc in self.tensors.values()))


def looks_like_hub_id(name: str) -> bool:
    """'org/name' with no local meaning: two non-empty parts, not a relative path like ./x or x/."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def resolve_checkpoint_dir(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local directory as is; a hub id (Qwen/Qwen3.5-0.8B) via the local Hugging Face cache."""
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise CheckpointError(f"{local} is a file, not a checkpoint directory",
                                  "pass the directory that holds config.json and the safetensors")
        return local
    name = str(path)
    if not looks_like_hub_id(name):
        raise CheckpointError(f"no checkpoint directory at {local}",
                              "pass a local checkpoint directory or a hub id such as Qwen/Qwen3.5-0.8B")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True, cache_dir=cache_dir))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as err:
        raise CheckpointError(
            f"'{name}' is not a local directory and is not in the Hugging Face cache"
            f"{f' at {cache_dir}' if cache_dir else ''} (loading works offline, from the cache only)",
            f"download it first with `hf download {name}`, or pass a local checkpoint directory",
        ) from err


def _read_json(path: Path, what: str) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CheckpointError(f"cannot read {what} {path}: {err.strerror or err}", "check the file") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{what} {path} is not valid JSON: {err}", "re-download the file") from err
    if not isinstance(raw, dict):
        raise CheckpointError(f"{what} {path} must hold a JSON object", "re-download the file")
    return raw


def read_config(root: Path) -> tuple[CheckpointConfig, bool]:
    """The parsed config and whether the checkpoint is a text-only export."""
    path = root / "config.json"
    if not path.is_file():
        raise CheckpointError(f"no config.json in {root}",
                              "pass a Hugging Face checkpoint directory (config.json beside the safetensors)")
    raw = _read_json(path, "config")
    model_type = raw.get("model_type")
    text_only = model_type in TEXT_ONLY_TYPES
    if text_only:
        raw = {"model_type": TEXT_ONLY_TYPES[model_type], "text_config": raw,
               "tie_word_embeddings": raw.get("tie_word_embeddings", False)}
    elif model_type not in TEXT_MODEL_TYPES:
        raise CheckpointError(
            f"{path}: unsupported model_type {model_type!r}",
            "qwen35 runs Qwen3.5 checkpoints: model_type 'qwen3_5' or 'qwen3_5_moe' "
            "(or their text-only forms 'qwen3_5_text' / 'qwen3_5_moe_text')",
        )
    try:
        return parse_config(raw, str(path)), text_only
    except CheckpointError:
        raise
    except InputError as err:
        raise CheckpointError(err.message, err.hint) from err


def _canonical_name(disk_name: str, text_only: bool) -> str:
    if text_only and disk_name.startswith("model."):
        return "model.language_model." + disk_name[len("model."):]
    return disk_name


def _weight_map(root: Path) -> dict[str, Path]:
    """Tensor name -> shard file, from the index or the single file's header."""
    index_path = root / INDEX_FILE
    if index_path.is_file():
        weight_map = _read_json(index_path, "index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path} has no weight_map", "re-download the checkpoint")
        files = {name: root / shard for name, shard in weight_map.items()}
        for shard in dict.fromkeys(files.values()):
            if not shard.is_file():
                first = next(n for n, f in files.items() if f == shard)
                raise CheckpointError(
                    f"{index_path.name} maps tensors (e.g. '{first}') to shard '{shard.name}', "
                    f"which is not in {root}",
                    "the download is incomplete: fetch the missing shard or re-download the checkpoint",
                )
        return files
    single = root / SINGLE_FILE
    if single.is_file():
        with safe_open(single, framework="pt") as handle:
            return {name: single for name in handle.keys()}
    raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {root}",
                          "pass a checkpoint directory with safetensors weights")


def _locate(files: dict[str, Path], text_only: bool) -> dict[str, TensorLocation]:
    by_shard: dict[Path, list[str]] = {}
    for name, shard in files.items():
        by_shard.setdefault(shard, []).append(name)
    tensors: dict[str, TensorLocation] = {}
    for shard, names in by_shard.items():
        with safe_open(shard, framework="pt") as handle:
            present = set(handle.keys())
            for name in names:
                if name not in present:
                    raise CheckpointError(f"the index maps '{name}' to {shard.name}, but that shard "
                                          "does not contain it", "re-download the checkpoint")
                piece = handle.get_slice(name)
                tensors[_canonical_name(name, text_only)] = TensorLocation(
                    shard, name, tuple(piece.get_shape()), piece.get_dtype())
    return tensors


def open_checkpoint(path: str | Path, cache_dir: str | Path | None = None) -> Checkpoint:
    """Resolve `path`, parse its config and read every tensor header (no tensor data)."""
    root = resolve_checkpoint_dir(path, cache_dir)
    config, text_only = read_config(root)
    return Checkpoint(root, config, _locate(_weight_map(root), text_only))
