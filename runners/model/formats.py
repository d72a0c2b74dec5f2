"""Which format a model file is, judged by its contents; pickled checkpoints are refused.

Untrusted model files never execute code here: pickled checkpoints (.pt/.pth/.bin/.ckpt state
dicts) are refused before anything reads them, naming the formats kondense reads safely.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from kondense.api.errors import BadInput
from kondense.api.spec import ModelFormat

FIELD = "spec.model.uri"
SAFE_FORMATS = (
    "a Hugging Face directory with safetensors weights (save_pretrained(safe_serialization="
    "True)), ONNX (.onnx), TorchScript (torch.jit.save), torch.export (.pt2, torch.export.save) "
    "or a .safetensors file of your own network with spec.model.architecture naming the "
    "function that builds it"
)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def detect_format(path: Path) -> ModelFormat:
    """The format of the model at `path`, judged by its contents, not only its name.

    Raises BadInput for a missing path, a pickled checkpoint (naming the safe formats) and
    anything unrecognised. Reads archive listings and headers only; nothing is unpickled.
    """
    if not path.exists():
        raise BadInput(f"no model at {path}; check the path or URI", field=FIELD)
    if path.is_dir():
        return _detect_directory(path)
    if zipfile.is_zipfile(path):
        from kondense.runners.io import storage
        from kondense.runners.io.archives import check_zip_members

        check_zip_members(path, storage.fetch_policy().max_bytes, FIELD)
        return _detect_archive(path)
    # Before the pickle check: a safetensors header length can start with the byte 0x80 too.
    if _is_safetensors(path):
        return ModelFormat.safetensors
    with path.open("rb") as handle:
        head = handle.read(2)
    # Pickle protocol 2+ starts with the PROTO opcode 0x80: a legacy torch.save checkpoint.
    if head[:1] == b"\x80" or path.suffix.lower() in PICKLE_SUFFIXES:
        raise _pickle_refused(path)
    if path.suffix.lower() == ".safetensors":
        raise BadInput(
            f"{path.name} is named .safetensors but is not a safetensors file (no valid "
            "header); save the weights with safetensors.torch.save_model",
            field=FIELD,
        )
    if path.suffix.lower() == ".onnx" or _parses_as_onnx(path):
        return ModelFormat.onnx
    raise BadInput(
        f"{path.name} is not a model format kondense reads; use {SAFE_FORMATS}", field=FIELD
    )


def locate_model(path: Path) -> tuple[Path, ModelFormat]:
    """The model file or Hugging Face directory at `path`, and its format.

    A directory holding exactly one .onnx file (and perhaps its external data) is that file;
    one without config.json holding exactly one .safetensors file is that file.
    """
    if path.is_dir():
        onnx_files = sorted(path.glob("*.onnx"))
        weights = sorted(path.glob("*.safetensors"))
        if len(onnx_files) == 1 and not weights:
            return onnx_files[0], ModelFormat.onnx
        if len(weights) == 1 and not onnx_files and not (path / "config.json").exists():
            return weights[0], detect_format(weights[0])
    return path, detect_format(path)


def _detect_directory(path: Path) -> ModelFormat:
    has_config = (path / "config.json").is_file()
    if has_config and any(path.glob("*.safetensors")):
        return ModelFormat.huggingface
    pickled = [p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickled:
        raise BadInput(
            f"{path} holds only pickled weights ({', '.join(sorted(pickled)[:3])}), which can "
            f"execute code when loaded, and no .safetensors; use {SAFE_FORMATS}",
            field=FIELD,
        )
    if not has_config:
        raise BadInput(
            f"{path} is a directory without config.json; a Hugging Face model directory needs "
            "config.json and .safetensors weights",
            field=FIELD,
        )
    raise BadInput(
        f"{path} has config.json but no .safetensors weights; use {SAFE_FORMATS}", field=FIELD
    )


def _detect_archive(path: Path) -> ModelFormat:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        formats = [n for n in names if n.endswith("/archive_format") or n == "archive_format"]
        if formats and archive.read(formats[0]).strip() == b"pt2":
            return ModelFormat.exported_program
    # TorchScript archives carry the compiled code; torch.save archives only data.pkl + tensors.
    if any("/code/" in n or n.startswith("code/") for n in names) and any(
        n.endswith("constants.pkl") for n in names
    ):
        return ModelFormat.torchscript
    if any(n.endswith("data.pkl") for n in names):
        raise _pickle_refused(path)
    raise BadInput(f"{path.name} is a zip archive but not a model; use {SAFE_FORMATS}", field=FIELD)


def _pickle_refused(path: Path) -> BadInput:
    return BadInput(
        f"{path.name} is a pickled PyTorch checkpoint; loading it can execute arbitrary code, "
        f"so kondense refuses it. Use {SAFE_FORMATS}",
        field=FIELD,
    )


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then that many bytes of
    JSON object, then the raw tensor data. Only the header is read."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return False
        (length,) = struct.unpack("<Q", prefix)
        if not 2 <= length <= size - 8 or length > 100_000_000:
            return False
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return False
    return isinstance(header, dict)


def _parses_as_onnx(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:
        return False
    # Random bytes sometimes parse as a protobuf; a real model has a version and nodes.
    return model.ir_version > 0 and len(model.graph.node) > 0
