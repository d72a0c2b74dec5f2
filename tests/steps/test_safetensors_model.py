"""Models defined in code: a safetensors file plus spec.model.architecture, the function that
builds the network (here fixtures/archs.py, as a user's package would). Loaded without
unpickling anything, then exported, pruned (structured and magnitude) and distilled."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures.archs import build_cnn
from fixtures.models import DIGITS_INPUTS, accuracy, run_onnx
from fixtures.models import step_context as export_context
from fixtures.training import job_spec, step_context
from runner.manifests import manifest, write_manifest
from safetensors.torch import save_file, save_model
from typer.testing import CliRunner

from kondense.api.errors import BadInput
from kondense.api.spec import (
    DistillConfig,
    ExportConfig,
    ModelFormat,
    ModelSource,
    PruneConfig,
)
from kondense.runners.cli import app
from kondense.runners.core import Model
from kondense.runners.model import architecture, formats
from kondense.runners.steps import load_step

CNN = "fixtures.archs:build_cnn"


@pytest.fixture(scope="session")
def digits_safetensors(digits_cnn: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained DigitsCNN's weights, saved with safetensors (no pickle, no code)."""
    path = tmp_path_factory.mktemp("digits-safetensors") / "weights.safetensors"
    save_model(digits_cnn, str(path))
    return path


def _source(uri: Path, name: str | None = CNN, **args: Any) -> ModelSource:
    return ModelSource.model_validate(
        {"uri": str(uri), "architecture": name, "architectureArgs": args or None}
    )


def _load(path: Path, name: str | None = CNN, **args: Any) -> Any:
    return architecture.source_module(
        path, formats.detect_format(path), _source(path, name, **args)
    )


def _model(path: Path) -> Model:
    return Model(path=path, format=ModelFormat.safetensors, module=_load(path))


# --- detection and loading -------------------------------------------------------------------


def test_a_safetensors_file_is_detected_by_its_header(
    digits_safetensors: Path, tmp_path: Path
) -> None:
    assert formats.detect_format(digits_safetensors) is ModelFormat.safetensors
    renamed = tmp_path / "weights.bin.st"
    renamed.write_bytes(digits_safetensors.read_bytes())
    assert formats.detect_format(renamed) is ModelFormat.safetensors
    # A folder holding one weights file and no config.json (an s3:// prefix, say) is that file.
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(digits_safetensors.read_bytes())
    assert formats.locate_model(folder) == (
        folder / "weights.safetensors",
        ModelFormat.safetensors,
    )


def test_a_header_length_starting_with_the_pickle_opcode_byte_is_still_safetensors(
    tmp_path: Path,
) -> None:
    # The 8-byte header length is little-endian: 0x180 bytes start with 0x80, like a pickle.
    path = tmp_path / "weights.safetensors"
    for size in range(64, 512):
        save_file({"w": torch.ones(2)}, str(path), metadata={"note": "x" * size})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert formats.detect_format(path) is ModelFormat.safetensors


def test_weights_load_into_the_architecture_exactly(
    digits_cnn: Any, digits_safetensors: Path, digits: dict[str, np.ndarray]
) -> None:
    module = _load(digits_safetensors)

    assert not module.training
    x = torch.from_numpy(digits["x_test"][:32])
    with torch.no_grad():
        assert torch.equal(module(x), digits_cnn(x))


def test_tied_parameters_saved_once_count_as_present(tmp_path: Path) -> None:
    from fixtures.archs import build_tied

    torch.manual_seed(0)
    original = build_tied()
    path = tmp_path / "tied.safetensors"
    save_model(original, str(path))  # safetensors keeps one of the two tied names

    module = _load(path, "fixtures.archs:build_tied")
    assert module.head.weight is module.embed.weight
    assert torch.equal(module.embed.weight, original.embed.weight)


@pytest.mark.parametrize(
    ("write", "words"),
    [
        (lambda p: p.write_bytes(pickle.dumps({"w": [1.0]})), "pickled"),
        (lambda p: torch.save({"w": torch.ones(2)}, str(p)), "pickled"),
        (lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"), "header"),
    ],
    ids=["pickle", "torch-save-zip", "garbage"],
)
def test_a_file_named_safetensors_that_is_not_one_is_refused_unread(
    tmp_path: Path, write: Any, words: str
) -> None:
    path = tmp_path / "weights.safetensors"
    write(path)
    with pytest.raises(BadInput, match=words) as refused:
        formats.detect_format(path)
    assert refused.value.field == "spec.model.uri"
    if zipfile.is_zipfile(path):
        assert "arbitrary code" in str(refused.value)


# --- bad input, each named by its field ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("no_such_package.models:build", "cannot import no_such_package.models"),
        ("fixtures.archs:build_absent", "no attribute 'build_absent'"),
        ("fixtures.archs:NOT_CALLABLE", "not a function or class"),
        ("fixtures.archs:build_nothing", "returned a builtins.dict, not a torch.nn.Module"),
        ("fixtures.archs:build_failing", "raised RuntimeError: this network needs a GPU"),
        ("subprocess:run", "standard library or kondense's own dependencies"),
        ("torch:load", "standard library or kondense's own dependencies"),
        ("joblib:load", "standard library or kondense's own dependencies"),
        ("kondense.runners.model.architecture:build_architecture", "kondense's own"),
    ],
)
def test_an_architecture_that_cannot_build_a_network_names_the_field(
    digits_safetensors: Path, name: str, words: str
) -> None:
    with pytest.raises(BadInput, match=words) as refused:
        _load(digits_safetensors, name)
    assert refused.value.field == "spec.model.architecture"


def test_an_unimportable_architecture_says_how_to_get_it_into_the_runner(
    digits_safetensors: Path,
) -> None:
    with pytest.raises(BadInput) as refused:
        _load(digits_safetensors, "no_such_package.models:build")
    message = str(refused.value)
    assert "No module named 'no_such_package'" in message
    assert "examples/runner-derived.Dockerfile" in message


def test_arguments_that_do_not_fit_the_signature_name_architecture_args(
    digits_safetensors: Path,
) -> None:
    with pytest.raises(BadInput, match="depth") as refused:
        _load(digits_safetensors, depth=3)
    assert refused.value.field == "spec.model.architectureArgs"


def test_missing_and_unexpected_keys_are_named_with_counts(digits_cnn: Any, tmp_path: Path) -> None:
    state = {k: v.clone() for k, v in digits_cnn.state_dict().items()}
    state.pop("classifier.3.bias")
    state["extra.weight"] = torch.ones(3)
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))

    with pytest.raises(BadInput) as refused:
        _load(path)
    message = str(refused.value)
    assert refused.value.field == "spec.model.uri"
    assert "missing 1 (classifier.3.bias)" in message
    assert "unexpected 1 (extra.weight)" in message


def test_weights_of_other_shapes_name_each_shape(digits_safetensors: Path) -> None:
    with pytest.raises(BadInput) as refused:
        _load(digits_safetensors, width=16)  # the file holds the width-32 network
    message = str(refused.value)
    assert refused.value.field == "spec.model.uri"
    assert "features.0.weight [32, 1, 3, 3] (the network has [16, 1, 3, 3])" in message
    assert "other shapes: 5 (" in message  # both convolutions and the first linear layer


def test_a_safetensors_model_needs_an_architecture_and_only_it_takes_one(
    digits_safetensors: Path, tiny_onnx: Path
) -> None:
    with pytest.raises(BadInput, match="needs the callable that builds it") as refused:
        _load(digits_safetensors, None)
    assert refused.value.field == "spec.model.architecture"
    with pytest.raises(BadInput, match="only safetensors models take an architecture") as refused:
        _load(tiny_onnx)
    assert refused.value.field == "spec.model.architecture"
    assert _load(tiny_onnx, None) is None  # other formats load from their files


# --- the steps -------------------------------------------------------------------------------


def test_export_turns_it_into_onnx_that_matches_torch(
    digits_cnn: Any, digits_safetensors: Path, tmp_path: Path
) -> None:
    ctx = export_context(tmp_path, task="image-classification", inputs=DIGITS_INPUTS)
    exported = load_step("export")(_model(digits_safetensors), ExportConfig(), ctx)

    assert exported.format is ModelFormat.onnx and exported.module is None
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = digits_cnn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_onnx(exported.path, {"pixel_values": x}), expected, atol=1e-4)


def test_export_without_declared_inputs_asks_for_them(
    digits_safetensors: Path, tmp_path: Path
) -> None:
    ctx = export_context(tmp_path, task="image-classification")
    with pytest.raises(BadInput, match="input shapes") as refused:
        load_step("export")(_model(digits_safetensors), ExportConfig(), ctx)
    assert refused.value.field == "spec.model.inputs"
    assert "arrays named ['pixel_values']" in str(refused.value)


def test_export_traces_with_the_jobs_data_when_inputs_are_not_declared(
    digits_safetensors: Path, digits_npz: Path, tmp_path: Path
) -> None:
    spec = job_spec({"export": {}}, evaluation={"uri": str(digits_npz), "samples": 397})
    config = spec.steps[0].export
    assert isinstance(config, ExportConfig)
    ctx, _ = step_context(spec, tmp_path)
    exported = load_step("export")(_model(digits_safetensors), config, ctx)

    batch = np.zeros((7, 1, 8, 8), dtype=np.float32)  # the batch axis stayed dynamic
    assert run_onnx(exported.path, {"pixel_values": batch}).shape == (7, 10)


def test_magnitude_pruning_zeroes_the_weights_in_place(
    digits_safetensors: Path, tmp_path: Path
) -> None:
    spec = job_spec({"prune": {"method": "magnitude", "amount": 0.6}}, inputs=DIGITS_INPUTS)
    config = spec.steps[0].prune
    assert isinstance(config, PruneConfig)
    ctx, notes = step_context(spec, tmp_path)
    pruned = load_step("prune")(_model(digits_safetensors), config, ctx)

    assert pruned.module is not None
    assert notes["sparsity"] == pytest.approx(0.6, abs=0.02)


def test_distillation_derives_a_narrower_student(
    digits_safetensors: Path,
    digits_train_npz: Path,
    digits: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    spec = job_spec(
        {"distill": {"student": {"width": 0.5}, "training": {"epochs": 2}}},
        training={"uri": str(digits_train_npz), "samples": 400},
    )
    config = spec.steps[0].distill
    assert isinstance(config, DistillConfig)
    ctx, notes = step_context(spec, tmp_path)
    student = load_step("distill")(_model(digits_safetensors), config, ctx).module

    assert [m.out_channels for m in student.modules() if isinstance(m, torch.nn.Conv2d)] == [
        16,
        32,
    ]
    assert accuracy(student, digits["x_test"], digits["y_test"]) > 0.9
    assert notes["studentParameters"] < 0.5 * notes["teacherParameters"]


PRUNE = {"prune": {"method": "structured", "amount": 0.5, "fineTune": {"epochs": 2, "seed": 0}}}
DISTILL = {"distill": {"student": {"width": 0.5}, "training": {"epochs": 2, "seed": 0}}}


@pytest.mark.parametrize(
    ("step", "model"),
    [
        (PRUNE, {"format": "safetensors", "inputs": DIGITS_INPUTS}),
        # Format detected, input shapes read off the evaluation data.
        (DISTILL, {}),
    ],
    ids=["prune-structured", "distill"],
)
def test_kondense_run_makes_a_physically_smaller_onnx_model(
    digits_safetensors: Path,
    digits_npz: Path,
    digits_train_npz: Path,
    tmp_path: Path,
    step: dict[str, Any],
    model: dict[str, Any],
) -> None:
    document = manifest(
        digits_safetensors,
        [step],
        tmp_path / "out",
        task="image-classification",
        data={
            "training": {"uri": str(digits_train_npz), "samples": 1400},
            "evaluation": {"uri": str(digits_npz), "samples": 397},
        },
        evaluation={"maxMetricDrop": 0.05, "requireSpeedup": False, "batchSize": 32},
    )
    document["spec"]["model"] |= {"architecture": CNN, "architectureArgs": {"width": 32}, **model}
    job = write_manifest(tmp_path / "job.yaml", document)
    result = CliRunner().invoke(app, ["run", str(job)])
    assert result.exit_code == 0, result.output

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    results = report["results"]
    assert results["compressed"]["parameters"] < 0.5 * results["baseline"]["parameters"]
    assert results["compressed"]["bytes"] < 0.5 * results["baseline"]["bytes"]
    assert results["baseline"]["metric"] > 0.9 and results["metricDrop"] <= 0.05
    assert [s["name"] for s in report["steps"]] == [*step, "export"]


def test_the_example_package_builds_the_network_the_example_weights_fit(
    digits_safetensors: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # examples/custom-cnn-prune.yaml: make_digits.py saves the weights this package must fit.
    package = Path(__file__).resolve().parents[2] / "examples" / "packages" / "digits-nets"
    monkeypatch.syspath_prepend(str(package))
    module = _load(digits_safetensors, "digits_nets:build_cnn", width=32)
    assert type(module).__module__ == "digits_nets"


def test_a_student_given_as_safetensors_and_its_architecture_is_trained(
    digits_safetensors: Path,
    digits_train_npz: Path,
    digits: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    torch.manual_seed(1)
    weights = tmp_path / "student.safetensors"
    save_model(build_cnn(8), str(weights))
    given = {"uri": str(weights), "architecture": CNN, "architectureArgs": {"width": 8}}
    teacher = _model(digits_safetensors)
    spec = job_spec(
        {"distill": {"student": given, "training": {"epochs": 3, "learningRate": 0.003}}},
        training={"uri": str(digits_train_npz), "samples": 1400},
    )
    config = spec.steps[0].distill
    assert isinstance(config, DistillConfig)
    ctx, notes = step_context(spec, tmp_path / "work")
    student = load_step("distill")(teacher, config, ctx).module

    assert student.features[0].out_channels == 8
    assert accuracy(student, digits["x_test"], digits["y_test"]) > 0.9
    assert notes["student"] == str(weights)


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"uri": "WEIGHTS"}, "distill.student.architecture"),
        ({"uri": "WEIGHTS", "architecture": CNN}, "distill.student.uri"),  # width 8 != 32
        ({"architecture": "fixtures.archs:build_nothing"}, "distill.student.architecture"),
        ({"architecture": CNN, "architectureArgs": {"depth": 2}},
         "distill.student.architectureArgs"),
    ],
)  # fmt: skip
def test_a_student_defined_in_code_that_cannot_work_names_its_field(
    digits_safetensors: Path,
    digits_train_npz: Path,
    tmp_path: Path,
    given: dict[str, Any],
    field: str,
) -> None:
    weights = tmp_path / "student.safetensors"
    save_model(build_cnn(8), str(weights))
    given = {k: str(weights) if v == "WEIGHTS" else v for k, v in given.items()}
    spec = job_spec(
        {"distill": {"student": given}},
        training={"uri": str(digits_train_npz), "samples": 64},
    )
    config = spec.steps[0].distill
    assert isinstance(config, DistillConfig)
    ctx, _ = step_context(spec, tmp_path / "work")
    with pytest.raises(BadInput) as refused:
        load_step("distill")(_model(digits_safetensors), config, ctx)
    assert refused.value.field == field
