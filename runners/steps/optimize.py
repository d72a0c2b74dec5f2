"""optimize: ONNX Runtime offline graph optimization, and transformer fusion for BERT-like models.

Transformer fusion (onnxruntime.transformers) rewrites attention, layer norms, GELU and the
embedding block into com.microsoft fused ops, with heads and hidden size read from the model's
config.json. ONNX Runtime's offline optimizer then applies the requested level and saves the
result.

The step does what its config says. Choices that depend on later steps (the basic level
and no fusion before quantization) are settled beforehand by the plan: runners/plan.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from kondense.api.spec import (
    OptimizeConfig,
    OptimizeLevel,
    TransformerFusion,
)
from kondense.runners.core import Model, StepContext
from kondense.runners.model import MODEL_FILE, onnx_files

# Hugging Face model types whose encoder ONNX Runtime's BERT fusion recognises.
BERT_LIKE = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert"})


def run(model: Model, config: OptimizeConfig, ctx: StepContext) -> Model:
    """`model` (ONNX) fused and optimized, saved as ctx.workdir/model.onnx."""
    onnx_files.require_onnx(model, "optimize")
    current = model.path
    shape = transformer_shape(model.assets, config.transformer)
    if shape is not None:
        ctx.progress("optimize: transformer fusion", 0, 2)
        current, fused = fuse_transformer(current, ctx.workdir / "fused.onnx", *shape)
        ctx.report("fusedOperators", fused)
    level = config.level
    ctx.progress(f"optimize: ONNX Runtime level {level.value}", 1, 2)
    target = ort_optimize(current, ctx.workdir / MODEL_FILE, level)
    ctx.report("optimizeLevel", level.value)
    return model.with_(path=target)


def transformer_shape(assets: Path | None, mode: TransformerFusion) -> tuple[int, int] | None:
    """(num_heads, hidden_size) for transformer fusion, or None to skip it.

    auto: only for BERT-like model types in assets/config.json. bert: always; 0/0 (detected
    from the graph) when there is no config.
    """
    if mode is TransformerFusion.off:
        return None
    config_file = assets / "config.json" if assets is not None else None
    config = json.loads(config_file.read_text()) if config_file and config_file.is_file() else None
    if config is None:
        return (0, 0) if mode is TransformerFusion.bert else None
    if mode is TransformerFusion.auto and config.get("model_type") not in BERT_LIKE:
        return None
    heads = int(config.get("num_attention_heads", config.get("n_heads", 0)))
    hidden = int(config.get("hidden_size", config.get("dim", 0)))
    return heads, hidden


def fuse_transformer(
    source: Path, target: Path, num_heads: int, hidden_size: int
) -> tuple[Path, dict[str, int]]:
    """BERT fusion with onnxruntime.transformers; returns the fused model and fused-op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level=0: fusion only; the ORT optimizer level is applied separately afterwards.
    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=0,
        use_gpu=False,
    )
    statistics = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    onnx_files.save_onnx(optimized.model, target)
    return target, statistics


_LEVELS = {
    OptimizeLevel.basic: "ORT_ENABLE_BASIC",
    OptimizeLevel.extended: "ORT_ENABLE_EXTENDED",
    OptimizeLevel.all: "ORT_ENABLE_ALL",
}


def ort_optimize(source: Path, target: Path, level: OptimizeLevel) -> Path:
    """ONNX Runtime's offline optimization of `source` at `level`, saved at `target`.

    A model with external data (or over EXTERNAL_DATA_THRESHOLD) keeps its weights in
    `<target>.data`: left to itself, ONNX Runtime would refer to the source's data file by its
    name, which is not beside `target`. Weight pre-packing is off: this session only writes the
    graph, and packed copies of every MatMul weight would double its memory.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.disable_prepacking", "1")
    if (
        onnx_files.external_data_files(source)
        or onnx_files.onnx_size_bytes(source) > onnx_files.EXTERNAL_DATA_THRESHOLD
    ):
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", target.name + ".data"
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return target
