from __future__ import annotations

import os
from pathlib import Path

import pytest

# The S3 server fixtures (tests/s3server.py): s3_server, s3_client, s3_bucket.
from s3server import s3_bucket, s3_client, s3_server  # noqa: F401


def listing(directory: Path) -> dict[str, bytes]:
    """Name -> content of every regular file in ``directory`` (not recursive)."""
    return {
        entry.name: Path(entry.path).read_bytes()
        for entry in os.scandir(directory)
        if entry.is_file(follow_symlinks=False)
    }


@pytest.fixture
def dest_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d
