"""sweep_temp removes orphans of dead writers and never a live writer's temp."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import streamstore as ss
from streamstore._pending import is_temp_name

OLD = time.time() - 7200


def plant(directory: Path, name: str, mtime: float = OLD) -> Path:
    path = directory / name
    path.write_bytes(b"partial")
    os.utime(path, (mtime, mtime))
    return path


def dead_temp_name(pid: int = 999_999_999) -> str:
    return f".streamstore-tmp.{pid}.0123456789abcdef.report.pdf"


def test_removes_old_orphans_only(dest_dir: Path) -> None:
    orphan = plant(dest_dir, dead_temp_name())
    young = plant(dest_dir, dead_temp_name().replace("0123", "4567"), mtime=time.time())
    other = plant(dest_dir, "report.pdf")
    lookalike = plant(dest_dir, ".streamstore-tmp.notapid.0123456789abcdef.x")
    assert ss.sweep_temp(dest_dir) == 1
    assert not orphan.exists()
    assert young.exists() and other.exists() and lookalike.exists()
    assert ss.sweep_temp(dest_dir, older_than=0) == 1
    assert not young.exists()


def test_an_orphan_whose_pid_was_reused_is_still_removed(dest_dir: Path) -> None:
    orphan = plant(dest_dir, dead_temp_name(pid=os.getpid()))
    assert ss.sweep_temp(dest_dir) == 1
    assert not orphan.exists()


def test_never_removes_a_live_writers_temp_however_old(dest_dir: Path) -> None:
    pending = ss.FileSink(dest_dir / "f")
    pending.start(None)
    try:
        assert pending.temp_path is not None
        os.utime(pending.temp_path, (OLD, OLD))
        assert ss.sweep_temp(dest_dir, older_than=0) == 0
        assert pending.temp_path.exists()
        pending.write(b"data")
        pending.commit(pending.prepare(ss.StoreResult(None, 4, "0" * 64)))
    finally:
        pending.abort()
    assert (dest_dir / "f").read_bytes() == b"data"


def test_a_live_writer_in_another_process_is_kept_and_a_killed_one_is_swept(dest_dir: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from streamstore import FileSink\n"
        "p = FileSink(Path(sys.argv[1])); p.start(None)\n"
        "p.write(b'half')\n"
        "print(p.temp_path.name, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(dest_dir / "f")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        name = child.stdout.readline().strip()
        assert is_temp_name(name)
        os.utime(dest_dir / name, (OLD, OLD))
        assert ss.sweep_temp(dest_dir, older_than=0) == 0
        assert (dest_dir / name).exists()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert ss.sweep_temp(dest_dir, older_than=0) == 1
    assert os.listdir(dest_dir) == []


def test_symlinks_and_directories_with_temp_names_are_left_alone(dest_dir: Path,
                                                                  tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"keep")
    (dest_dir / dead_temp_name()).symlink_to(target)
    (dest_dir / dead_temp_name().replace("0123", "89ab")).mkdir()
    assert ss.sweep_temp(dest_dir, older_than=0) == 0
    assert target.read_bytes() == b"keep"


@pytest.mark.parametrize(("value", "exc"), [(-1, ValueError), ("1h", TypeError), (True, TypeError)])
def test_older_than_is_checked(value: object, exc: type[Exception], dest_dir: Path) -> None:
    with pytest.raises(exc, match="older_than"):
        ss.sweep_temp(dest_dir, older_than=value)  # type: ignore[arg-type]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ss.sweep_temp(tmp_path / "missing")
