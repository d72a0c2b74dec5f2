"""PyTorch models as tensor modules: Hugging Face directories, TorchScript, torch.export archives
and in-memory modules, their input names and example inputs to trace them with.

Hugging Face weights load from safetensors only, offline, without remote code; torch.export
archives are checked for pickled payloads and loaded with `torch.load` forced to
`weights_only=True`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import pickle
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kondense.api.errors import BadInput
from kondense.api.spec import ModelFormat, Task, TensorSpec
from kondense.runners.model.assets import hf_assets_dir, sentence_pooling
from kondense.runners.model.formats import FIELD, detect_format

if TYPE_CHECKING:
    import torch

    from kondense.runners.core import Model


def load_torch_module(model: Model, task: Task) -> torch.nn.Module:
    """The model as an eval-mode torch module whose forward takes tensors and returns tensors.

    In-memory modules (from prune/distill) are used as they are; Hugging Face modules and
    directories are wrapped by `hf_tensor_module` (inputs in the tokenizer's order, the main
    output; for text-embedding models with a sentence-transformers pooling config, the
    pooled and, where configured, L2-normalized sentence embedding). TorchScript loads with
    torch.jit.load, torch.export archives with torch.export.load after a pickle check.
    """
    if model.module is not None:
        if is_huggingface(model.module):
            return wrap_huggingface(model.module, hf_assets_dir(model), task)
        module: torch.nn.Module = model.module
        return module.eval()
    if model.format is ModelFormat.huggingface:
        return wrap_huggingface(load_huggingface(model.path, task), model.path, task)
    if model.format is ModelFormat.torchscript:
        return load_torchscript(model.path)
    if model.format is ModelFormat.exported_program:
        return load_exported_program(model.path).module()
    if model.format is ModelFormat.safetensors:
        # The runner builds safetensors models when it loads them (model/architecture.py).
        raise BadInput(
            f"{model.path.name} holds weights only; name the function that builds the network",
            field="spec.model.architecture",
        )
    raise BadInput(
        f"{model.format.value} models are not PyTorch models; this step needs a PyTorch model",
        field=FIELD,
    )


def load_huggingface(path: Path, task: Task) -> torch.nn.Module:
    """The transformers model in a Hugging Face directory, in eval mode, with its layers (to
    prune or train; `wrap_huggingface` makes it a tensor module): safetensors only, no remote
    code, offline, eager attention."""
    import transformers

    if detect_format(path) is not ModelFormat.huggingface:
        raise BadInput(f"{path} is not a Hugging Face model directory", field=FIELD)
    auto = {
        Task.text_classification: transformers.AutoModelForSequenceClassification,
        Task.image_classification: transformers.AutoModelForImageClassification,
    }.get(task, transformers.AutoModel)
    try:
        module = auto.from_pretrained(
            str(path),
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=True,
            attn_implementation="eager",
        )
    except (OSError, ValueError) as error:
        raise BadInput(
            f"cannot load the Hugging Face model in {path}: {error}", field=FIELD
        ) from error
    loaded: torch.nn.Module = module.eval()
    return loaded


def load_torchscript(path: Path) -> torch.nn.Module:
    import torch

    try:
        module: torch.nn.Module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise BadInput(
            f"{path.name} is not a loadable TorchScript model: {error}", field=FIELD
        ) from error
    return module.eval()


def load_exported_program(path: Path) -> torch.export.ExportedProgram:
    """A torch.export archive, refusing pickled payloads and never unpickling code."""
    import torch

    _check_pt2_archive(path)
    try:
        with _pickle_forbidden():
            return torch.export.load(str(path))
    except BadInput:
        raise
    except Exception as error:
        raise BadInput(
            f"{path.name} is not a loadable torch.export archive: {error}", field=FIELD
        ) from error


def _check_pt2_archive(path: Path) -> None:
    # torch.export.load unpickles weights/constants flagged use_pickle and "opaque" objects
    # with weights_only=False; such archives are refused before torch sees them.
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith(("model_weights_config.json", "model_constants_config.json")):
                continue
            config = json.loads(archive.read(name)).get("config", {})
            for fqn, payload in config.items():
                path_name = str(payload.get("path_name", ""))
                if payload.get("use_pickle") or not path_name.startswith(("weight_", "tensor_")):
                    raise BadInput(
                        f"{path.name} stores {fqn!r} as a pickled object, which can execute code "
                        "when loaded; re-export it with plain tensor weights",
                        field=FIELD,
                    )


@contextlib.contextmanager
def _pickle_forbidden() -> Iterator[None]:
    """Within: torch.load only with weights_only=True, and plain pickle.loads refused."""
    import torch

    original_load = torch.load
    original_loads = pickle.loads

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise BadInput("the model archive contains a pickled object; refused", field=FIELD)

    torch.load = weights_only_load
    pickle.loads = refuse
    try:
        yield
    finally:
        torch.load = original_load
        pickle.loads = original_loads


def is_huggingface(module: Any) -> bool:
    """A transformers model (it has a config and can save itself)."""
    return hasattr(module, "config") and hasattr(module, "save_pretrained")


def wrap_huggingface(module: Any, assets: Path | None, task: Task) -> torch.nn.Module:
    """`module` (a transformers model) as an `hf_tensor_module` for `task`."""
    names = hf_input_names(module, assets)
    # Eager attention traces to the MatMul/Softmax pattern ONNX Runtime's transformer fusion
    # recognises; SDPA (the transformers default) exports a graph it cannot fuse.
    if hasattr(module, "set_attn_implementation"):
        with contextlib.suppress(Exception):
            module.set_attn_implementation("eager")
    pooling = sentence_pooling(assets) if task is Task.text_embedding and assets else None
    return hf_tensor_module(module, names, pooling).eval()


def hf_input_names(module: Any, assets: Path | None) -> list[str]:
    """The inputs the model takes, in the tokenizer's order when it has one."""
    accepted = set(inspect.signature(module.forward).parameters)
    if assets is not None and (
        (assets / "tokenizer.json").exists() or (assets / "vocab.txt").exists()
    ):
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(str(assets), local_files_only=True)
        names = [n for n in tokenizer.model_input_names if n in accepted]
        if names:
            return names
    main = getattr(module, "main_input_name", "input_ids")
    return [main] + (
        ["attention_mask"] if main == "input_ids" and "attention_mask" in accepted else []
    )


def _tensor_module_class() -> type:
    import torch

    class _HFTensorModule(torch.nn.Module):
        """A transformers model taking positional tensors and returning one tensor."""

        def __init__(
            self, model: Any, input_names: Sequence[str], pooling: dict[str, bool] | None
        ) -> None:
            super().__init__()
            self.model = model
            self.input_names = list(input_names)
            self.pooling = pooling
            self.output_names = (
                ["sentence_embedding"]
                if pooling
                else ["logits"]
                if "ForSequenceClassification" in type(model).__name__
                or "ForImageClassification" in type(model).__name__
                else ["last_hidden_state"]
            )

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            inputs = dict(zip(self.input_names, tensors, strict=False))
            output = self.model(**inputs, return_dict=True)[0]
            if not self.pooling:
                return output
            if self.pooling["cls"]:
                pooled = output[:, 0]
            else:
                from kondense.runners.nn.training import mean_pool

                pooled = mean_pool(output, inputs.get("attention_mask"))
            if self.pooling["normalize"]:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled

    return _HFTensorModule


def hf_tensor_module(
    model: Any, input_names: Sequence[str], pooling: dict[str, bool] | None
) -> torch.nn.Module:
    """Wrap a transformers model: forward(*tensors in `input_names` order) -> main output.

    `pooling` ({"cls", "mean", "normalize"}) turns token states into a sentence embedding.
    The wrapper carries `input_names` and `output_names` for export.
    """
    module: torch.nn.Module = _tensor_module_class()(model, input_names, pooling)
    return module


def module_signature(module: torch.nn.Module, declared: Sequence[TensorSpec] | None) -> list[str]:
    """Input names of a torch module: the wrapper's, spec.model.inputs', the program's
    placeholders, or the forward signature's."""
    names = getattr(module, "input_names", None)
    if names:
        return list(names)
    if declared:
        return [t.name for t in declared]
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        schema = module.forward.schema  # type: ignore[attr-defined]
        return [a.name for a in schema.arguments[1:]]
    if isinstance(module, torch.fx.GraphModule):
        placeholders = [n.name for n in module.graph.nodes if n.op == "placeholder"]
        if placeholders:
            return placeholders
    parameters = inspect.signature(module.forward).parameters.values()
    return [
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]


def example_inputs(
    input_names: Sequence[str],
    *,
    declared: Sequence[TensorSpec] | None,
    tokenizer_dir: Path | None,
    examples: Sequence[Any] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Tensors to trace the model with, in `input_names` order.

    From spec.model.inputs when declared, else a tokenized sample sentence pair (batch 2), else
    `examples` (the inputs a torch.export program was saved with, or samples of the job's
    data). BadInput when none is known.
    """

    if declared:
        by_name = {t.name: t for t in declared}
        missing = [n for n in input_names if n not in by_name]
        if missing:
            raise BadInput(
                f"spec.model.inputs lacks {missing}; the model takes {list(input_names)}",
                field="spec.model.inputs",
            )
        return tuple(_declared_tensor(by_name[n]) for n in input_names)
    if tokenizer_dir is not None:
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(tokenizer_dir), local_files_only=True
        )
        encoded = tokenizer(
            ["kondense exports this sentence.", "a second, longer sentence pads the first one"],
            padding=True,
            return_tensors="pt",
        )
        return tuple(encoded[n] for n in input_names)
    if examples:
        return tuple(examples)
    raise BadInput(
        "kondense needs the model's input shapes to export it; declare spec.model.inputs "
        f"(name, shape, dtype for each input), or give .npz data with arrays named "
        f"{list(input_names)}",
        field="spec.model.inputs",
    )


def _declared_tensor(spec: TensorSpec) -> torch.Tensor:
    import torch

    dtype = getattr(torch, spec.dtype.value)
    if dtype.is_floating_point:
        return torch.rand(spec.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    return torch.ones(spec.shape, dtype=dtype)
