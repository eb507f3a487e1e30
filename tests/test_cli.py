"""The ``streamstore`` command line, end to end via ``python -m streamstore``."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamstore import ContentStore
from streamstore._cli import EXIT_CODES, build_parser, main, parse_duration, parse_size
from streamstore.testing import fail_storage

DATA = bytes(range(256)) * 40  # 10 KiB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cli(*args: str | Path, stdin: bytes | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        [sys.executable, "-m", "streamstore", *map(str, args)],
        input=stdin if stdin is not None else b"", capture_output=True, cwd=cwd, timeout=60,
    )
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return proc


def one_error_line(proc: subprocess.CompletedProcess[bytes], command: str) -> str:
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"streamstore {command}: "), lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    a = tmp_path / "a.bin"
    a.write_bytes(DATA)
    b = tmp_path / "b.txt"
    b.write_bytes(b"hello\n")
    return {"a": a, "b": b, "store": tmp_path / "store"}


# -- put --------------------------------------------------------------------------


def test_put_files_and_stdin_print_sha256sum_lines(files: dict[str, Path]) -> None:
    store = files["store"]
    proc = cli("put", store, files["a"], "-", files["b"], stdin=b"from stdin")
    assert proc.returncode == 0 and proc.stderr == b""
    assert proc.stdout.decode().splitlines() == [
        f"{sha(DATA)}  {len(DATA)}  {files['a']}",
        f"{sha(b'from stdin')}  10  -",
        f"{sha(b'hello' + bytes([10]))}  6  {files['b']}",
    ]
    cs = ContentStore(store)
    assert sorted(cs) == sorted([sha(DATA), sha(b"from stdin"), sha(b"hello\n")])
    again = cli("put", store, stdin=b"from stdin")  # no inputs: stdin
    assert again.stdout.decode() == f"{sha(b'from stdin')}  10  -\n"
    assert len(cs) == 3


def test_put_metadata_and_info_json(files: dict[str, Path]) -> None:
    store = files["store"]
    proc = cli("put", store, files["a"], "--meta", "filename=a.bin", "--meta", "type=x=y")
    assert proc.returncode == 0
    info = cli("info", store, sha(DATA).upper())
    assert info.returncode == 0
    doc = json.loads(info.stdout)
    assert doc == {"sha256": sha(DATA), "size": len(DATA),
                   "path": str(ContentStore(store).path(sha(DATA))),
                   "metadata": {"filename": "a.bin", "type": "x=y"}}
    bad = cli("put", store, files["a"], "--meta", "novalue")
    assert bad.returncode == 2
    one_error_line(bad, "put")


def test_put_hash_mismatch_stores_nothing(files: dict[str, Path]) -> None:
    store = files["store"]
    proc = cli("put", store, files["a"], "--sha256", sha(b"other"))
    assert proc.returncode == 4 and proc.stdout == b""
    line = one_error_line(proc, "put")
    assert str(files["a"]) in line and "mismatch" in line and "nothing was stored" in line
    assert len(ContentStore(store)) == 0
    ok = cli("put", store, "-", "--sha256", sha(DATA).upper(), stdin=DATA)
    assert ok.returncode == 0 and ok.stdout.decode().startswith(sha(DATA))


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-size", "1K"), ("--max-size", "10239"), ("--min-size", "10.5K"),
     ("--min-size", "1MiB")],
)
def test_put_size_limits(files: dict[str, Path], option: str, value: str) -> None:
    proc = cli("put", files["store"], files["a"], option, value)
    assert proc.returncode == 5
    assert "nothing was stored" in one_error_line(proc, "put")
    assert len(ContentStore(files["store"])) == 0


def test_put_within_limits_and_options_after_inputs(files: dict[str, Path]) -> None:
    proc = cli("put", files["store"], files["a"], "--max-size", "10K", files["b"],
               "--min-size", "6", "--no-fsync")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2


def test_put_missing_input_reports_it_and_goes_on(files: dict[str, Path],
                                                   tmp_path: Path) -> None:
    missing = tmp_path / "missing.bin"
    proc = cli("put", files["store"], missing, files["b"], tmp_path)
    assert proc.returncode == 8
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"streamstore put: {missing}: cannot open input")
    assert lines[0].endswith("nothing was stored")
    assert lines[1].startswith(f"streamstore put: {tmp_path}: ")  # a directory
    assert proc.stdout.decode() == f"{sha(b'hello' + bytes([10]))}  6  {files['b']}\n"


def test_put_usage_errors(files: dict[str, Path]) -> None:
    for args in (
        ("put", files["store"], files["a"], files["b"], "--sha256", sha(DATA)),
        ("put", files["store"], "-", "-"),
        ("put", files["store"], "--sha256", "../../etc/passwd"),
        ("put", files["store"], "--max-size", "ten"),
    ):
        proc = cli(*args)
        assert proc.returncode == 2, args
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not (files["store"] / "objects").exists()  # refused before creating anything


# -- read side --------------------------------------------------------------------


@pytest.fixture
def filled(files: dict[str, Path]) -> Path:
    assert cli("put", files["store"], files["a"], files["b"]).returncode == 0
    return files["store"]


def test_cat_streams_the_object(filled: Path) -> None:
    proc = cli("cat", filled, sha(DATA))
    assert proc.returncode == 0 and proc.stdout == DATA and proc.stderr == b""


def test_ls_lists_digest_and_size(filled: Path) -> None:
    proc = cli("ls", filled)
    assert proc.returncode == 0
    assert proc.stdout.decode().splitlines() == sorted(
        [f"{sha(DATA)}  {len(DATA)}", f"{sha(b'hello' + bytes([10]))}  6"])


def test_rm_then_not_found(filled: Path) -> None:
    proc = cli("rm", filled, sha(DATA))
    assert proc.returncode == 0 and proc.stderr == b""
    assert sha(DATA) not in ContentStore(filled)
    again = cli("rm", filled, sha(DATA))
    assert again.returncode == 3
    assert one_error_line(again, "rm").endswith(f"no such object {sha(DATA)}")


@pytest.mark.parametrize("command", ["cat", "info", "rm"])
def test_missing_and_invalid_digests(filled: Path, command: str) -> None:
    missing = cli(command, filled, sha(b"absent"))
    assert missing.returncode == 3 and sha(b"absent") in one_error_line(missing, command)
    invalid = cli(command, filled, "../../etc/passwd")
    assert invalid.returncode == 2
    assert "64 hexadecimal" in one_error_line(invalid, command)


@pytest.mark.parametrize("command", ["cat", "info", "ls", "verify", "sweep"])
def test_read_commands_on_a_non_store(tmp_path: Path, command: str) -> None:
    args = [command, tmp_path / "nowhere"] + ([sha(DATA)] if command in ("cat", "info") else [])
    proc = cli(*args)
    assert proc.returncode == 3
    assert "not a content store" in one_error_line(proc, command)
    assert not (tmp_path / "nowhere").exists()


def test_verify_exit_codes(filled: Path) -> None:
    ok = cli("verify", filled)
    assert ok.returncode == 0 and ok.stdout == b""
    path = ContentStore(filled).path(sha(DATA))
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.write(b"X")
    bad = cli("verify", filled)
    assert bad.returncode == 1
    assert bad.stdout.decode() == f"{sha(DATA)}\n"
    assert "1 corrupt object" in one_error_line(bad, "verify")
    single = cli("verify", filled, sha(b"hello\n"))
    assert single.returncode == 0


def test_sweep(filled: Path) -> None:
    orphan = filled / "tmp" / f".streamstore-tmp.{2**22 + 7}.{'0' * 16}.object"
    orphan.write_bytes(b"partial")
    young = cli("sweep", filled)
    assert young.returncode == 0 and young.stdout.decode() == "removed 0 orphaned temp file(s)\n"
    past = time.time() - 120
    os.utime(orphan, (past, past))
    proc = cli("sweep", filled, "--older-than", "1m")
    assert proc.returncode == 0 and proc.stdout.decode() == "removed 1 orphaned temp file(s)\n"
    assert not orphan.exists()
    bad = cli("sweep", filled, "--older-than", "soon")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


# -- store (the core) -------------------------------------------------------------


def test_store_file_and_stdin(files: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "copy.bin"
    proc = cli("store", files["a"], dest)
    assert proc.returncode == 0
    assert proc.stdout.decode() == f"{sha(DATA)}  {len(DATA)}  {dest}\n"
    assert dest.read_bytes() == DATA
    proc = cli("store", "-", dest, "--sha256", sha(b"new"), stdin=b"new")
    assert proc.returncode == 0 and dest.read_bytes() == b"new"


def test_store_failures_leave_dest_unchanged(files: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "keep.bin"
    dest.write_bytes(b"original")
    mismatch = cli("store", files["a"], dest, "--sha256", sha(b"x"))
    assert mismatch.returncode == 4
    assert f"{dest} was not changed" in one_error_line(mismatch, "store")
    big = cli("store", files["a"], dest, "--max-size", "1K")
    assert big.returncode == 5
    nodir = cli("store", files["a"], tmp_path / "no" / "such" / "dir")
    assert nodir.returncode == 9
    assert "does not exist" in one_error_line(nodir, "store")
    assert dest.read_bytes() == b"original"


# -- usage, help ------------------------------------------------------------------


def test_usage_errors_are_one_line_exit_2() -> None:
    for args in ((), ("bogus",), ("put",), ("cat", "store"), ("ls", "a", "b")):
        proc = cli(*args)
        assert proc.returncode == 2, args
        assert len(proc.stderr.splitlines()) == 1, proc.stderr


def test_help_documents_commands_and_exit_codes() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    text = proc.stdout.decode()
    for command in ("put", "cat", "info", "ls", "rm", "verify", "sweep", "store"):
        assert command in text
    for code, meaning in EXIT_CODES.items():
        assert f"{code}" in text and meaning in text
    put_help = cli("put", "--help").stdout.decode()
    assert "--max-size" in put_help and "--meta" in put_help and "exit codes" in put_help


def test_exit_codes_are_distinct() -> None:
    assert len(set(EXIT_CODES)) == len(EXIT_CODES)
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert build_parser().prog == "streamstore"


# -- storage failures (in process, with streamstore.testing.fail_storage) -----------


@pytest.mark.parametrize(
    ("code", "exit_code", "words"),
    [(errno.ENOSPC, 6, "No space left"), (errno.EACCES, 7, "Permission denied"),
     (errno.EIO, 9, "Input/output error")],
)
def test_storage_failures_map_to_exit_codes(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], code: int, exit_code: int,
    words: str,
) -> None:
    store = files["store"]
    ContentStore(store)
    with fail_storage(store, errno=code, after_bytes=100):
        rc = main(["put", str(store), str(files["a"])])
    out, err = capsys.readouterr()
    assert rc == exit_code and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and words in lines[0] and lines[0].endswith("nothing was stored")
    assert len(ContentStore(store)) == 0


def test_metadata_failure_says_the_object_was_stored(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = ContentStore(files["store"])
    shard = store.root / "objects" / sha(DATA)[:2] / sha(DATA)[2:4]
    shard.mkdir(parents=True)
    with fail_storage(shard, at="rename", errno=errno.EIO):
        rc = main(["put", str(store.root), str(files["a"]), "--meta", "k=v"])
    _, err = capsys.readouterr()
    assert rc == 9
    assert "it was stored completely (" in err and err.rstrip().endswith("but finishing failed")
    assert store.info(sha(DATA)).metadata == {}


# -- sizes, durations -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("123", 123), ("10M", 10 * 2**20), ("1.5GiB", 3 * 2**29), ("2k", 2048),
     ("500KB", 500_000), ("1 MB", 10**6), ("7B", 7), ("1T", 2**40), (".5K", 512)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "-1", "1.2.3", "10X", "1e3", "ten"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("1h", 3600.0), ("1.5h", 5400.0),
     ("2d", 172800.0), ("0", 0.0)],
)
def test_parse_duration(text: str, value: float) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["", "h", "-5", "1w", "1h30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


# -- progress -----------------------------------------------------------------------


def run_with_tty_stderr(args: list[str], stdin: bytes | None = None) -> tuple[int, bytes, str]:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamstore", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=slave,
        )
        os.close(slave)
        out, _ = proc.communicate(stdin, timeout=60)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only_for_large_inputs(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(16 * 2**20))
    store = tmp_path / "store"
    rc, out, err = run_with_tty_stderr(["put", str(store), str(big)])
    assert rc == 0 and out.decode().startswith(sha(big.read_bytes()))
    assert "big.bin" in err and "16.0 MiB" in err and "%" in err and "/s" in err
    assert "\r" in err and "Traceback" not in err

    rc, out, err = run_with_tty_stderr(["put", str(store), "-"], stdin=os.urandom(6 * 2**20))
    assert rc == 0 and "stdin" in err and "/s" in err  # unknown total: bytes and rate

    small = tmp_path / "small.bin"
    small.write_bytes(b"tiny")
    rc, out, err = run_with_tty_stderr(["put", str(store), str(small)])
    assert rc == 0 and err == ""

    piped = cli("put", store, big)  # stderr is a pipe: no progress
    assert piped.returncode == 0 and piped.stderr == b""
