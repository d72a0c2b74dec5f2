"""Bounds on zip archives (.npz data, TorchScript and torch.export models) before anything
reads them: a few kilobytes of deflated zeros can expand to gigabytes."""

from __future__ import annotations

import zipfile
from pathlib import Path

from kondense.api.errors import BadInput

MAX_MEMBERS = 10_000


def check_zip_members(path: Path, limit: int, field: str | None) -> None:
    """BadInput naming `field` when the archive at `path` has more than MAX_MEMBERS members or
    its members expand, alone or together, past `limit` bytes (the download cap)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise BadInput(
            f"{path.name} is not a readable zip archive: {error}", field=field
        ) from error
    if len(members) > MAX_MEMBERS:
        raise BadInput(
            f"{path.name} has {len(members)} archive members, over {MAX_MEMBERS}", field=field
        )
    total = 0
    for member in members:
        total += member.file_size
        if member.file_size > limit or total > limit:
            raise BadInput(
                f"{path.name}: member {member.filename} expands to {member.file_size} bytes "
                f"({total} so far), past the cap of {limit}; raise "
                "spec.storage.maxDownloadBytes or the pool's maxDownloadBytes if it is meant",
                field=field,
            )
