"""Structured pruning of MiniLM: whole attention heads and feed-forward channels removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures.training import job_spec, step_context

from kondense.api.spec import ModelFormat, PruneConfig, Task
from kondense.runners.core import Model
from kondense.runners.model.torch_modules import load_huggingface
from kondense.runners.nn.training import forward
from kondense.runners.steps.prune import run

SENTENCES = ["The cache layer times out after the release.", "How do I reset my password?"]


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path) -> Any:
    return load_huggingface(minilm_dir, Task.text_embedding)


def _tokens(minilm_dir: Path) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    return dict(tokenizer(SENTENCES, padding=True, return_tensors="np"))


def _prune(module: Any, minilm_dir: Path, tmp_path: Path, amount: float) -> tuple[Model, Any]:
    spec = job_spec({"prune": {"method": "structured", "amount": amount}}, task="text-embedding")
    config = spec.steps[0].prune
    assert isinstance(config, PruneConfig)
    ctx, notes = step_context(spec, tmp_path / "work")
    model = Model(path=minilm_dir, format=ModelFormat.huggingface, module=module)
    return run(model, config, ctx), notes


def test_structured_pruning_removes_heads_and_feed_forward_channels(
    minilm: Any, minilm_dir: Path, tmp_path: Path
) -> None:
    import copy

    result, notes = _prune(copy.deepcopy(minilm), minilm_dir, tmp_path, 0.5)

    layer = result.module.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == 6
    assert layer.attention.self.query.out_features == 6 * 32
    assert layer.intermediate.dense.out_features == 768
    assert notes["attentionHeads"] == "72 -> 36"
    assert notes["parametersAfter"] < notes["parametersBefore"] - 5_000_000
    with torch.no_grad():
        assert forward(result.module, _tokens(minilm_dir)).shape == (2, 384)
    assert result.assets == minilm_dir  # the tokenizer travels with the in-memory module


def test_removing_a_dead_head_leaves_the_embeddings_unchanged(
    minilm: Any, minilm_dir: Path, tmp_path: Path
) -> None:
    import copy

    module = copy.deepcopy(minilm)
    with torch.no_grad():  # silence head 3 of every layer: the one pruning must pick
        for layer in module.encoder.layer:
            rows = slice(3 * 32, 4 * 32)
            for name in ("query", "key", "value"):
                getattr(layer.attention.self, name).weight[rows] = 0
                getattr(layer.attention.self, name).bias[rows] = 0
            layer.attention.output.dense.weight[:, rows] = 0
            channels = slice(0, 1536 // 12)  # and 1/12 of the feed-forward channels
            layer.intermediate.dense.weight[channels] = 0
            layer.intermediate.dense.bias[channels] = 0
            layer.output.dense.weight[:, channels] = 0
        before = forward(module, _tokens(minilm_dir))

    result, _ = _prune(module, minilm_dir, tmp_path, 1 / 12)

    with torch.no_grad():
        after = forward(result.module, _tokens(minilm_dir))
    assert result.module.encoder.layer[0].attention.self.num_attention_heads == 11
    assert result.module.encoder.layer[0].intermediate.dense.out_features == 1536 - 128
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_fine_tuning_without_labels_pulls_embeddings_back_to_the_original(
    minilm: Any, minilm_dir: Path, tmp_path: Path
) -> None:
    import copy
    import json

    text = tmp_path / "text.jsonl"
    lines = [f"{a} {b}." for a in SENTENCES for b in ("today", "again", "for everyone")] * 16
    text.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    step = {"method": "structured", "amount": 0.5}
    tuned_step = {**step, "fineTune": {"epochs": 2, "learningRate": 0.0003, "batchSize": 16}}
    results = []
    for index, config in enumerate((step, tuned_step)):
        spec = job_spec({"prune": config}, task="text-embedding", training={"uri": str(text)})
        prune = spec.steps[0].prune
        assert isinstance(prune, PruneConfig)
        ctx, _ = step_context(spec, tmp_path / f"work{index}")
        model = Model(path=minilm_dir, format=ModelFormat.huggingface, module=copy.deepcopy(minilm))
        results.append(run(model, prune, ctx).module)

    with torch.no_grad():
        original = forward(minilm, _tokens(minilm_dir))
        untuned, tuned = (forward(m, _tokens(minilm_dir)) for m in results)
    cosine = torch.nn.functional.cosine_similarity
    # No labels in the data: the unpruned model's embeddings were the targets.
    assert cosine(tuned, original).mean() > cosine(untuned, original).mean() + 0.1
