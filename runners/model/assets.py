"""The files a Hugging Face model carries besides its weights (tokenizer, config,
sentence-transformers modules), where a model keeps them, and copying them along."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from kondense.api.errors import BadInput
from kondense.api.spec import ModelFormat

if TYPE_CHECKING:
    from kondense.runners.core import Model

# Files a Hugging Face directory carries besides the weights; a consumer of the compressed model
# needs them to tokenize and to read the config.
HF_ASSET_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "preprocessor_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
HF_ASSET_DIRS = ("1_Pooling", "2_Normalize")


def copy_hf_assets(source: Path, target: Path) -> None:
    """Copy the tokenizer/config files and folders a consumer needs from `source` to `target`.

    BadInput for a file or folder that is, or lies behind, a symlink leaving `source`: a link
    to /proc/self/environ would otherwise publish the runner's environment."""
    target.mkdir(parents=True, exist_ok=True)
    root = source.resolve()
    for name in HF_ASSET_FILES:
        if (source / name).is_file():
            shutil.copyfile(confined(root, source / name), target / name)
    for name in HF_ASSET_DIRS:
        if (source / name).is_dir():
            folder = confined(root, source / name)
            (target / name).mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    relative = path.relative_to(folder)
                    (target / name / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(confined(root, path), target / name / relative)


def check_hf_assets(source: Path) -> None:
    """BadInput when a tokenizer/config file or folder of the model folder `source` links out
    of it: checked when the model is loaded, long before the files are copied to the output."""
    root = source.resolve()
    for name in HF_ASSET_FILES:
        if (source / name).exists():
            confined(root, source / name)
    for name in HF_ASSET_DIRS:
        if (source / name).is_dir():
            folder = confined(root, source / name)
            for path in folder.rglob("*"):
                confined(root, path)


def confined(root: Path, path: Path) -> Path:
    """`path` resolved, when it stays inside the folder `root` (resolved); BadInput if not."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise BadInput(
            f"{path.name} in the model folder is a symlink to {resolved}, outside the folder; "
            "copy the file into the folder instead",
            field="spec.model.uri",
        )
    return resolved


def copy_assets(target: Path, *models: Model) -> Path | None:
    """Copy the asset files of the first of `models` that has any (`hf_assets_dir`) to
    `target`; `target`, or None when none has any."""
    source = hf_assets_dir(*models)
    if source is None:
        return None
    copy_hf_assets(source, target)
    return target


def hf_assets_dir(*models: Model) -> Path | None:
    """Where the tokenizer/config files of the first of `models` that has them sit: its
    `assets`, or the Hugging Face directory itself."""
    for model in models:
        if model.assets is not None and model.assets.is_dir():
            return model.assets
        if model.format is ModelFormat.huggingface and model.path.is_dir():
            return model.path
    return None


def tokenizer_dir(folder: Path | None) -> Path | None:
    """`folder` if it holds tokenizer files, else None."""
    if folder is None:
        return None
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        if (folder / name).exists():
            return folder
    return None


def sentence_pooling(folder: Path) -> dict[str, bool] | None:
    """The sentence-transformers pooling of a model directory: {"mean"|"cls", "normalize"}.

    None when the directory has no modules.json with a Pooling module.
    """
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    pooling_entry = next((m for m in modules if m.get("type", "").endswith(".Pooling")), None)
    if pooling_entry is None:
        return None
    config_file = folder / pooling_entry.get("path", "") / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    return {
        "cls": bool(config.get("pooling_mode_cls_token", False)),
        "mean": not config.get("pooling_mode_cls_token", False),
        "normalize": any(m.get("type", "").endswith(".Normalize") for m in modules),
    }
