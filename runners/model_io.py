"""Reading model files safely: which format a file is, ONNX validation, and torch modules.

Untrusted model files never execute code here. Pickled checkpoints (.pt/.pth/.bin/.ckpt state
dicts) are refused before anything reads them; Hugging Face weights load from safetensors
only; torch.export archives are checked for pickled payloads and loaded with `torch.load`
forced to `weights_only=True`; ONNX external data must stay inside the model's folder.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import pickle
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kondense.api.errors import BadInput
from kondense.api.spec import ModelFormat, Task, TensorSpec

if TYPE_CHECKING:
    import onnx
    import torch

    from kondense.runners.core import Model

FIELD = "spec.model.uri"
SAFE_FORMATS = (
    "a Hugging Face directory with safetensors weights (save_pretrained(safe_serialization="
    "True)), ONNX (.onnx), TorchScript (torch.jit.save) or torch.export (.pt2, torch.export.save)"
)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
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


# --- format detection ------------------------------------------------------------------------


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
        return _detect_archive(path)
    with path.open("rb") as handle:
        head = handle.read(2)
    # Pickle protocol 2+ starts with the PROTO opcode 0x80: a legacy torch.save checkpoint.
    if head[:1] == b"\x80" or path.suffix.lower() in PICKLE_SUFFIXES:
        raise _pickle_refused(path)
    if path.suffix.lower() == ".onnx" or _parses_as_onnx(path):
        return ModelFormat.onnx
    raise BadInput(
        f"{path.name} is not a model format kondense reads; use {SAFE_FORMATS}", field=FIELD
    )


def locate_model(path: Path) -> tuple[Path, ModelFormat]:
    """The model file or Hugging Face directory at `path`, and its format.

    A directory holding exactly one .onnx file (and perhaps its external data) is that file.
    """
    if path.is_dir():
        onnx_files = sorted(path.glob("*.onnx"))
        if len(onnx_files) == 1 and not any(path.glob("*.safetensors")):
            return onnx_files[0], ModelFormat.onnx
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


def _parses_as_onnx(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:
        return False
    # Random bytes sometimes parse as a protobuf; a real model has a version and nodes.
    return model.ir_version > 0 and len(model.graph.node) > 0


# --- ONNX ------------------------------------------------------------------------------------


def require_onnx(model: Model, step: str) -> None:
    """Refuse anything but a valid ONNX model for an ONNX-only step."""
    if model.module is not None or model.format is not ModelFormat.onnx:
        raise BadInput(
            f"{step} works on ONNX models; put an export step before {step}",
            field="spec.steps",
        )
    check_onnx(model.path)


def check_onnx(path: Path) -> None:
    """Validate the ONNX model at `path` (onnx.checker, by path so >2 GB models work).

    External-data locations must be relative paths inside the model's folder: absolute paths,
    `..` and symlinks that lead outside are refused with BadInput, as is a corrupt file.
    """
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as error:
        raise BadInput(
            f"{path.name} is not a readable ONNX model ({type(error).__name__}: {error}); "
            "re-export it or check the download",
            field=FIELD,
        ) from error
    check_external_data(model, path.parent)
    try:
        onnx.checker.check_model(str(path))
    except Exception as error:
        raise BadInput(
            f"{path.name} fails the ONNX checker: {str(error).splitlines()[0]}; re-export it",
            field=FIELD,
        ) from error


def check_external_data(model: onnx.ModelProto, folder: Path) -> None:
    """Refuse external-data locations that leave `folder` (absolute, `..`, escaping symlinks)."""
    from onnx import TensorProto

    root = folder.resolve()
    for tensor in iter_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        where = f"external data of tensor {tensor.name!r}: location {location!r}"
        if not location or os.path.isabs(location) or Path(location).is_absolute():
            raise BadInput(f"{where} must be a relative path inside the model folder", field=FIELD)
        if ".." in Path(location).parts:
            raise BadInput(f"{where} leaves the model folder ('..'); refused", field=FIELD)
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise BadInput(
                f"{where} resolves outside the model folder (symlink); refused", field=FIELD
            )
        if not target.is_file():
            raise BadInput(f"{where} is missing; keep the data file beside the model", field=FIELD)


def iter_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of the model: initializers and node attributes, subgraphs included."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)


def onnx_size_bytes(path: Path) -> int:
    """Bytes of the model file plus the external-data files it refers to."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    files = {path.resolve()}
    for tensor in iter_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                files.add((path.parent / entry.value).resolve())
    return sum(f.stat().st_size for f in files if f.is_file())


# protobuf cannot serialise a message over 2 GB: weights beyond this go to one file beside it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of tensor data held inside the model proto (external data not counted)."""
    return sum(len(t.raw_data) + 4 * len(t.float_data) for t in iter_tensors(model))


def save_onnx(model: onnx.ModelProto, path: Path, *, external: bool | None = None) -> Path:
    """Save `model` at `path`; over 1.8 GB of weights (or `external`) go to `<name>.data`."""
    import onnx

    if external is None:
        external = weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))
    return path


def copy_hf_assets(source: Path, target: Path) -> None:
    """Copy the tokenizer/config files and folders a consumer needs from `source` to `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for name in HF_ASSET_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    for name in HF_ASSET_DIRS:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, dirs_exist_ok=True)


def external_data_files(path: Path) -> list[Path]:
    """The external-data files the ONNX model at `path` refers to."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    files = {
        (path.parent / entry.value).resolve()
        for tensor in iter_tensors(model)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return sorted(files)


def consolidate_external_data(path: Path) -> None:
    """Rewrite a model whose weights are spread over external files (torch's exporters write
    them) so they sit in one `<name>.data` file beside it, or inside the model when under
    1.8 GB; a model without external data is untouched."""
    import onnx

    files = external_data_files(path)
    if not files:
        return
    model = onnx.load_model(str(path), load_external_data=True)
    for file in files:
        file.unlink(missing_ok=True)
    save_onnx(model, path)


# --- torch -----------------------------------------------------------------------------------


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
            assets = model.assets or (model.path if model.path.is_dir() else None)
            return wrap_huggingface(model.module, assets, task)
        module: torch.nn.Module = model.module
        return module.eval()
    if model.format is ModelFormat.huggingface:
        return load_huggingface(model.path, task)
    if model.format is ModelFormat.torchscript:
        return load_torchscript(model.path)
    if model.format is ModelFormat.exported_program:
        return load_exported_program(model.path).module()
    raise BadInput(
        f"{model.format.value} models are not PyTorch models; this step needs a PyTorch model",
        field=FIELD,
    )


def load_huggingface(path: Path, task: Task) -> torch.nn.Module:
    """A Hugging Face directory as a tensor module: safetensors only, no remote code, offline."""
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
    return wrap_huggingface(module, path, task)


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
    program_examples: Sequence[Any] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Tensors to trace the model with, in `input_names` order.

    From spec.model.inputs when declared, else a tokenized sample sentence pair (batch 2), else
    the example inputs a torch.export program was saved with. BadInput when none is known.
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
    if program_examples:
        return tuple(program_examples)
    raise BadInput(
        "kondense needs the model's input shapes to export it; declare spec.model.inputs "
        "(name, shape, dtype for each input)",
        field="spec.model.inputs",
    )


def _declared_tensor(spec: TensorSpec) -> torch.Tensor:
    import torch

    dtype = getattr(torch, spec.dtype.value)
    if dtype.is_floating_point:
        return torch.rand(spec.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    return torch.ones(spec.shape, dtype=dtype)


def hf_assets_dir(model: Model) -> Path | None:
    """Where tokenizer/config files sit: `model.assets`, or the Hugging Face directory itself."""
    if model.assets is not None:
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
