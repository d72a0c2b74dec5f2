"""Relative paths in a manifest resolve against the manifest's folder, students included."""

from __future__ import annotations

from pathlib import Path

from kondense.api.spec import CompressionJobSpec, DistillConfig
from kondense.runners.plan import resolve_uris


def test_relative_student_uri_resolves_against_the_manifest_folder(tmp_path: Path) -> None:
    spec = CompressionJobSpec.model_validate(
        {
            "model": {"uri": "models/teacher"},
            "data": {"training": {"uri": "data/train.jsonl"}},
            "steps": [{"distill": {"student": {"uri": "models/student"}}}, {"export": {}}],
            "output": {"uri": "s3://bucket/out"},
        }
    )
    resolved = resolve_uris(spec, tmp_path)
    distill = resolved.steps[0].config
    assert isinstance(distill, DistillConfig)
    assert distill.student.uri == str(tmp_path / "models/student")
    assert resolved.model.uri == str(tmp_path / "models/teacher")
    assert resolved.output.uri == "s3://bucket/out"
    assert resolved.steps[1].name == "export"
