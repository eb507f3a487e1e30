from __future__ import annotations

import os
from pathlib import Path

import pytest


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
