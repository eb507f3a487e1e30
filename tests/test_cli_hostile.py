"""The command line under hostile conditions: closed and broken standard
streams, file names that are not UTF-8, a corrupt metadata file, interrupts
after the commit, and a destination that is not a regular file."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamstore import ContentStore
from streamstore._cli import EXIT_OUTPUT, EXIT_STORAGE

DATA = bytes(range(256)) * 40


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([sys.executable, "-m", "streamstore", *map(str, args)],
                          capture_output=True, timeout=60, **kwargs)  # type: ignore[call-overload]
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return proc


def shell(script: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``script`` in sh with ``ss`` meaning this interpreter's streamstore."""
    prelude = f'ss() {{ "{sys.executable}" -m streamstore "$@"; }}\n'
    proc = subprocess.run(["sh", "-c", prelude + script], cwd=cwd, capture_output=True,
                          timeout=60)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return proc


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    paths = []
    for i in range(3):
        path = tmp_path / f"in{i}.bin"
        path.write_bytes(DATA + bytes([i]))
        paths.append(path)
    return paths


def test_put_with_a_closed_stdout_stores_every_input_and_says_so(
        tmp_path: Path, inputs: list[Path]) -> None:
    proc = shell(f"ss put store {' '.join(map(str, inputs))} >&-; echo rc=$? >&2", tmp_path)
    err = proc.stderr.decode()
    assert f"rc={EXIT_OUTPUT}" in err and "stdout is closed" in err
    store = ContentStore(tmp_path / "store")
    assert sorted(store) == sorted(sha(p.read_bytes()) for p in inputs)


def test_put_into_a_broken_pipe_stores_every_input_and_says_so(
        tmp_path: Path, inputs: list[Path]) -> None:
    # The reader is gone before the first line is written: EPIPE on write.
    proc = subprocess.Popen([sys.executable, "-m", "streamstore", "put", "store",
                             *map(str, inputs)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == EXIT_OUTPUT, err
    assert "Traceback" not in err and "stdout is broken" in err
    assert len(ContentStore(tmp_path / "store")) == len(inputs)


def test_closed_stdin_is_an_input_error_and_later_inputs_are_stored(
        tmp_path: Path, inputs: list[Path]) -> None:
    proc = shell(f"ss put store - {inputs[0]} <&-; echo rc=$? >&2", tmp_path)
    err = proc.stderr.decode()
    assert "stdin is closed" in err and "rc=8" in err
    assert sha(inputs[0].read_bytes()) in ContentStore(tmp_path / "store")


def test_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9-\xff.bin")  # Latin-1 bytes: not UTF-8
    (tmp_path / name).write_bytes(DATA)
    later = tmp_path / "later.bin"
    later.write_bytes(b"later")
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": ""}
    proc = run("put", tmp_path / "store", tmp_path / name, tmp_path / "missing\udcff",
               later, env=env)
    assert proc.returncode == 8  # the missing one; the others are stored
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{sha(DATA)}  {len(DATA)}  ".encode() + os.fsencode(tmp_path / name)
    assert lines[1].startswith(sha(b"later").encode())
    assert b"missing\\xff" in proc.stderr


def test_ls_reports_one_corrupt_metadata_file_and_lists_the_rest(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    bad = store.put(b"bad", metadata={"a": 1})
    good = store.put(b"good", metadata={"b": 2})
    assert bad.path is not None
    meta = bad.path.with_name(bad.sha256 + ".json")
    meta.chmod(0o644)
    meta.write_bytes(b"{not json")
    proc = run("ls", tmp_path / "store")
    assert proc.returncode == 0, proc.stderr  # ls needs sizes only
    assert sorted(proc.stdout.decode().split()) == sorted(
        [bad.sha256, "3", good.sha256, "4"])
    info = run("info", tmp_path / "store", bad.sha256)
    assert info.returncode == EXIT_STORAGE and b"corrupt" in info.stderr


def test_rm_of_a_present_and_a_missing_object(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    good = store.put(b"good").sha256
    missing = sha(b"never stored")
    proc = run("rm", tmp_path / "store", good, missing)
    assert proc.returncode == 3
    assert proc.stderr.decode().strip() == f"streamstore rm: no such object {missing}"
    assert good not in store


def test_read_commands_create_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    digest = store.put(b"x").sha256
    (tmp_path / "store" / "tmp").rmdir()
    for command in (["cat", digest], ["info", digest], ["ls"], ["verify"], ["rm", digest]):
        run(command[0], tmp_path / "store", *command[1:])
        assert not (tmp_path / "store" / "tmp").exists(), command


def test_version() -> None:
    from importlib.metadata import version

    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.decode().strip() == f"streamstore {version('streamstore')}"


INTERRUPT_AFTER_RENAME = textwrap.dedent(
    """
    import os, sys
    from streamstore import _cli
    real = os.replace

    def replace_then_interrupt(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # as a signal handler would, right after the rename

    os.replace = replace_then_interrupt
    sys.exit(_cli.main(sys.argv[1:]))
    """
)


def test_an_interrupt_after_the_rename_is_reported_as_stored(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"old")
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_AFTER_RENAME, "store", str(src),
                           str(dest)], capture_output=True, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 130 and "Traceback" not in err
    assert dest.read_bytes() == DATA
    assert "interrupted, but it was stored completely" in err and sha(DATA) in err
    assert "was not changed" not in err


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_store_refuses_to_replace_a_device_node(tmp_path: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    proc = run("store", src, null)
    assert proc.returncode == EXIT_STORAGE
    assert b"character device, not a regular file" in proc.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert set(os.listdir(tmp_path)) == {"null", "src.bin"}  # no temp left
