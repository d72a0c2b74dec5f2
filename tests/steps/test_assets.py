"""A model that a training step writes back keeps every file its original carried besides the
weights: a pruned sentence-transformers model still normalizes and tokenizes like the original."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fixtures.training import job_spec, step_context

from kondense.api.spec import ModelFormat, PruneConfig
from kondense.runners.core import Model
from kondense.runners.steps.prune import run


def _sentence_transformers_dir(minilm_dir: Path, folder: Path) -> Path:
    """MiniLM as sentence-transformers saves it: with the (empty) 2_Normalize folder that the
    packaged copy drops, and the added-tokens and preprocessor files other models carry."""
    folder.mkdir()
    for item in minilm_dir.iterdir():
        if item.suffix == ".safetensors":  # read, never copied: a link saves 90 MB
            (folder / item.name).symlink_to(item)
        elif item.is_dir():
            shutil.copytree(item, folder / item.name)
        else:  # copied files may not link out of the folder (a link to /proc/self/environ)
            shutil.copyfile(item, folder / item.name)
    (folder / "2_Normalize").mkdir()
    (folder / "added_tokens.json").write_text("{}\n")
    (folder / "preprocessor_config.json").write_text("{}\n")
    return folder


def test_a_pruned_sentence_transformers_model_keeps_all_its_assets(
    minilm_dir: Path, tmp_path: Path
) -> None:
    source = _sentence_transformers_dir(minilm_dir, tmp_path / "minilm")
    spec = job_spec({"prune": {"method": "magnitude", "amount": 0.1}}, task="text-embedding")
    config = spec.steps[0].prune
    assert isinstance(config, PruneConfig)
    ctx, _ = step_context(spec, tmp_path / "work")

    result = run(Model(path=source, format=ModelFormat.huggingface), config, ctx)

    assert result.assets == result.path and result.path != source
    folder = result.path
    for name in ("2_Normalize", "1_Pooling"):
        assert (folder / name).is_dir(), name
    for name in ("added_tokens.json", "preprocessor_config.json", "modules.json", "vocab.txt"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "config.json").read_text())["hidden_size"] == 384
    assert (folder / "model.safetensors").is_file()
