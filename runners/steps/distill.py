"""The distill step: train a smaller student to reproduce the teacher (the incoming model).

soft-targets: `L = alpha*CE(y, s) + (1-alpha)*T^2*KL(softmax(t/T) || softmax(s/T))`, labelled data.
task-specific: unlabelled domain data, the teacher's outputs are the only targets (embedding
models: cosine between sentence embeddings; classifiers: the soft-target term alone).

The student is given (`student.uri`: a Hugging Face directory, or a .safetensors file with
`student.architecture`; or `student.architecture` alone, from its own initialisation) or
derived from the teacher: transformers keep every k-th block (`student.keepEvery`), other
networks keep `student.width` of their channels. The output is the trained student, in memory
and, for Hugging Face models, saved as a directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kondense.api.errors import BadInput
from kondense.api.spec import DistillConfig, DistillMode, StudentSource, Task
from kondense.runners.core import Model, StepContext

if TYPE_CHECKING:
    import torch

    from kondense.runners.nn.training import BatchStream, TrainingBatch

STUDENT = "distill.student"


def run(model: Model, config: DistillConfig, ctx: StepContext) -> Model:
    import torch

    from kondense.runners.nn import pruning, trainable
    from kondense.runners.nn.training import forward, train

    task = ctx.task
    teacher = trainable.load_module(model, task, step="distill").eval()
    stream = trainable.training_stream(ctx, model, teacher, config.training.batch_size)
    student, notes = _student(teacher, config, ctx, stream, task)
    teacher.requires_grad_(False)
    student.requires_grad_(True)
    first = next(iter(stream()), None)
    if first is None:
        raise BadInput("the training data is empty", field="spec.data.training.uri")
    _check_compatible(teacher, student, first, config)
    embeddings = _is_embedding(teacher, task)
    if config.mode is DistillMode.soft_targets and config.alpha > 0:
        trainable.require_labels(first, why="soft-target distillation with alpha > 0")
    loss = _loss(teacher, config, embeddings)
    student.train()
    result = train(
        student,
        stream,
        loss,
        config.training,
        seed=config.training.seed,
        progress=ctx.progress,
        description="distill",
    )
    notes |= result.notes("train")
    notes |= {
        "mode": config.mode.value,
        "temperature": config.temperature,
        # Embeddings have no classes: they are matched by cosine, with no hard-label term.
        "alpha": config.alpha
        if config.mode is DistillMode.soft_targets and not embeddings
        else 0.0,
        "loss": "1 - cosine to the teacher embedding"
        if embeddings
        else "alpha*CE + (1-alpha)*T^2*KL",
        "teacherParameters": pruning.parameter_count(teacher),
        "studentParameters": pruning.parameter_count(student),
    }
    if embeddings and ctx.data.evaluation is not None:
        evaluation = trainable.data_stream(
            ctx.data.evaluation,
            model,
            teacher,
            config.training.batch_size,
            ctx.sequence_length,
        )
        with torch.no_grad():
            notes["evalCosineToTeacher"] = round(
                _mean_cosine(teacher, student, evaluation, forward), 6
            )
    for key, value in notes.items():
        ctx.report(key, value)
    return trainable.write_back(student, model, ctx)


def _student(
    teacher: torch.nn.Module,
    config: DistillConfig,
    ctx: StepContext,
    stream: BatchStream,
    task: Task,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    from kondense.runners.nn import layers, students, trainable

    given = config.student
    if given.uri is not None or given.architecture is not None:
        student = _load_student(given, task, ctx.workdir / "student")
        return student, {"student": given.uri or f"{given.architecture}, its own initialisation"}
    if layers.transformer_layers(teacher) is not None:
        student, kept = students.shallow_student(teacher, config.student.keep_every)
        described = "teacher layers " + ",".join(map(str, kept))
    else:
        example = trainable.example_inputs(ctx, stream)
        student = students.narrow_student(teacher, example, config.student.width)
        described = f"teacher at width {config.student.width}"
    if not config.student.init_from_teacher:
        students.reinitialise(student, config.training.seed)
        described += ", re-initialised"
    return student, {"student": described}


def _load_student(given: StudentSource, task: Task, scratch: Path) -> torch.nn.Module:
    """The student given by the spec: a Hugging Face directory, a .safetensors file with the
    architecture that builds it, or that architecture alone (trained from its own
    initialisation)."""
    from kondense.runners.io import storage
    from kondense.runners.model import architecture, formats
    from kondense.runners.model.torch_modules import load_huggingface

    if given.uri is None:
        assert given.architecture is not None
        args = given.architecture_args or {}
        return architecture.build_architecture(given.architecture, args, at=STUDENT).train()
    path = storage.fetch(given.uri, scratch)  # local paths as they are; s3:// and https:// fetched
    if given.architecture is not None or path.suffix == ".safetensors":
        try:
            path, detected = formats.locate_model(path)
        except BadInput as error:  # the same refusals as the teacher's, named for the student
            raise BadInput(error.args[0], field=f"{STUDENT}.uri") from error
        module = architecture.source_module(path, detected, given, at=STUDENT)
        if module is not None:
            return module.train()
    if not path.is_dir():
        raise BadInput(
            f"{given.uri} is not a Hugging Face model directory; a student must be a trainable "
            "PyTorch model with layers (config.json + safetensors, or a .safetensors file with "
            "student.architecture), or omit student.uri to derive one from the teacher",
            field=f"{STUDENT}.uri",
        )
    return load_huggingface(path, task).train()


def _is_embedding(teacher: torch.nn.Module, task: Task) -> bool:
    return task is Task.text_embedding or (
        task is Task.generic and hasattr(teacher, "config") and not hasattr(teacher, "classifier")
    )


def _check_compatible(
    teacher: torch.nn.Module, student: torch.nn.Module, batch: TrainingBatch, config: DistillConfig
) -> None:
    import torch

    from kondense.runners.nn.training import forward

    with torch.no_grad():
        teacher_out = forward(teacher, {k: v[:2] for k, v in batch.inputs.items()})
        try:
            student_out = forward(student.eval(), {k: v[:2] for k, v in batch.inputs.items()})
        except (RuntimeError, TypeError, ValueError) as error:
            raise BadInput(
                f"the student cannot run on the teacher's inputs ({error}); give a student "
                "that takes the same inputs",
                field="distill.student.uri",
            ) from error
    if tuple(student_out.shape[1:]) != tuple(teacher_out.shape[1:]):
        raise BadInput(
            f"the student's outputs have shape {list(student_out.shape[1:])} per sample but "
            f"the teacher's have {list(teacher_out.shape[1:])}; the student must predict the "
            "same classes (or embedding size) as the teacher",
            field="distill.student.uri" if config.student.uri else "distill.student",
        )


def _loss(teacher: torch.nn.Module, config: DistillConfig, embeddings: bool) -> Any:
    import torch

    from kondense.runners.nn.losses import cosine_loss, kd_loss
    from kondense.runners.nn.training import forward

    task_specific = config.mode is DistillMode.task_specific
    alpha = 0.0 if task_specific else config.alpha

    def loss(student: torch.nn.Module, batch: TrainingBatch) -> torch.Tensor:
        with torch.no_grad():
            target = forward(teacher, batch.inputs)
        output = forward(student, batch.inputs)
        if embeddings:
            return cosine_loss(output, target)
        labels = None
        if alpha > 0:
            assert batch.labels is not None
            labels = torch.from_numpy(batch.labels).long()
        return kd_loss(output, target, labels, config.temperature, alpha)

    return loss


def _mean_cosine(
    teacher: torch.nn.Module, student: torch.nn.Module, stream: BatchStream, forward: Any
) -> float:
    import torch.nn.functional as F

    student.eval()
    values = []
    for batch in stream():
        cos = F.cosine_similarity(forward(student, batch.inputs), forward(teacher, batch.inputs))
        values.extend(cos.tolist())
    return sum(values) / max(len(values), 1)
