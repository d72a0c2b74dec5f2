"""The distill step: train a smaller student to reproduce the teacher (the incoming model).

soft-targets: `L = alpha*CE(y, s) + (1-alpha)*T^2*KL(softmax(t/T) || softmax(s/T))`, labelled data.
task-specific: unlabelled domain data, the teacher's outputs are the only targets (embedding
models: cosine between sentence embeddings; classifiers: the soft-target term alone).

The student is `student.uri` or derived from the teacher: transformers keep every k-th block
(`student.keepEvery`), other networks keep `student.width` of their channels. The output is the
trained student, in memory and, for Hugging Face models, saved as a directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kondense.api.errors import BadInput
from kondense.api.spec import DistillConfig, DistillMode, Task
from kondense.runners.core import Model, StepContext

if TYPE_CHECKING:
    import torch

    from kondense.runners.nn.training import BatchStream, TrainingBatch


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

    if config.student.uri is not None:
        student = _load_student(config.student.uri, task, ctx.workdir / "student")
        return student, {"student": config.student.uri}
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


def _load_student(uri: str, task: Task, scratch: Path) -> torch.nn.Module:
    from kondense.runners.io import storage
    from kondense.runners.model.torch_modules import load_huggingface

    path = storage.fetch(uri, scratch)  # local paths as they are; s3:// and https:// fetched
    if not path.is_dir():
        raise BadInput(
            f"{uri} is not a Hugging Face model directory; a student must be a trainable "
            "PyTorch model with layers (config.json + safetensors), or omit student.uri to "
            "derive one from the teacher",
            field="distill.student.uri",
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
