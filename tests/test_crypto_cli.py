"""The command line with encryption: --key-file / $STREAMSTORE_KEY_FILE for
put, cat, info, ls, verify and store; decrypt; keygen; exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamstore import ContentStore
from streamstore._cli import EXIT_CODES, EXIT_DECRYPT
from streamstore.crypto import Keyring, open_decrypted

DATA = bytes(range(256)) * 700  # 175 KiB: three segments


def cli(*args: str | Path, stdin: bytes = b"", env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    environ = {k: v for k, v in os.environ.items() if k != "STREAMSTORE_KEY_FILE"}
    environ.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "streamstore", *map(str, args)], input=stdin,
                          capture_output=True, timeout=60, env=environ)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return proc


def error_line(proc: subprocess.CompletedProcess[bytes], command: str) -> str:
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"streamstore {command}: "), lines[0]
    return lines[0]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    proc = cli("keygen", "k2025")
    assert proc.returncode == 0
    line = proc.stdout.decode()
    assert line.startswith("k2025 ") and len(line.split()[1]) == 64
    path.write_text(line)
    os.chmod(path, 0o600)
    return path


def test_put_cat_info_ls_verify_with_a_key_file(tmp_path: Path, keys: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(DATA)
    store = tmp_path / "store"
    digest = hashlib.sha256(DATA).hexdigest()
    put = cli("put", store, src, "--key-file", keys)
    assert put.returncode == 0, put.stderr
    assert put.stdout.decode() == f"{digest}  {len(DATA)}  {src}\n"
    stored = ContentStore(store).path(digest).read_bytes()
    assert DATA[:1000] not in stored
    cat = cli("cat", store, digest, "--key-file", keys)
    assert cat.returncode == 0 and cat.stdout == DATA
    info = cli("info", store, digest, "--key-file", keys)
    assert json.loads(info.stdout)["size"] == len(DATA)
    ls = cli("ls", store, "--key-file", keys)
    assert ls.stdout.decode() == f"{digest}  {len(DATA)}\n"
    assert cli("verify", store, "--key-file", keys).returncode == 0
    # Without the key the object is its ciphertext: cat shows no plaintext, verify flags it.
    assert DATA[:1000] not in cli("cat", store, digest).stdout
    assert cli("verify", store).returncode == 1


def test_the_environment_variable_names_the_key_file(tmp_path: Path, keys: Path) -> None:
    store = tmp_path / "store"
    env = {"STREAMSTORE_KEY_FILE": str(keys)}
    put = cli("put", store, stdin=DATA, env=env)
    assert put.returncode == 0, put.stderr
    digest = put.stdout.split()[0].decode()
    with ContentStore(store, encryption=Keyring.from_file(keys)).open(digest) as f:
        assert f.read() == DATA
    assert cli("cat", store, digest, env=env).stdout == DATA
    # --key-file wins over the variable.
    other = tmp_path / "other"
    other.write_text(cli("keygen", "k2025").stdout.decode())
    proc = cli("cat", store, digest, "--key-file", other, env=env)
    assert proc.returncode == EXIT_DECRYPT
    assert "not the key" in error_line(proc, "cat")


def test_tampered_objects(tmp_path: Path, keys: Path) -> None:
    store = tmp_path / "store"
    digest = cli("put", store, "--key-file", keys, stdin=DATA).stdout.split()[0].decode()
    path = ContentStore(store).path(digest)
    os.chmod(path, 0o644)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 1  # inside the final segment
    path.write_bytes(bytes(blob))
    verify = cli("verify", store, "--key-file", keys)
    assert verify.returncode == 1 and verify.stdout.decode() == f"{digest}\n"
    cat = cli("cat", store, digest, "--key-file", keys)
    assert cat.returncode == EXIT_DECRYPT
    assert "failed authentication" in error_line(cat, "cat")
    assert DATA[: 2 * 65536].startswith(cat.stdout)  # never bytes of the damaged segment


def test_wrong_and_unusable_key_files(tmp_path: Path, keys: Path) -> None:
    store = tmp_path / "store"
    digest = cli("put", store, "--key-file", keys, stdin=DATA).stdout.split()[0].decode()
    wrong = tmp_path / "wrong"
    wrong.write_text(cli("keygen", "k2025").stdout.decode())
    proc = cli("verify", store, "--key-file", wrong)
    assert proc.returncode == EXIT_DECRYPT and "wrong key" in error_line(proc, "verify")
    unknown = tmp_path / "unknown"
    unknown.write_text(cli("keygen", "k2026").stdout.decode())
    proc = cli("info", store, digest, "--key-file", unknown)
    assert proc.returncode == EXIT_DECRYPT and "k2025" in error_line(proc, "info")
    proc = cli("put", store, "--key-file", tmp_path / "missing", stdin=b"x")
    assert proc.returncode == 2 and "cannot read the key file" in error_line(proc, "put")
    secret = "ab" * 31
    bad = tmp_path / "bad"
    bad.write_text(f"k1 {secret}\n")
    proc = cli("put", store, "--key-file", bad, stdin=b"x")
    assert proc.returncode == 2
    assert "line 1" in error_line(proc, "put") and secret not in proc.stderr.decode()
    assert len(list(ContentStore(store))) == 1


def test_store_and_decrypt(tmp_path: Path, keys: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(DATA)
    dest = tmp_path / "out.enc"
    proc = cli("store", src, dest, "--key-file", keys,
               "--sha256", hashlib.sha256(DATA).hexdigest())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == f"{hashlib.sha256(DATA).hexdigest()}  {len(DATA)}  {dest}\n"
    with open_decrypted(dest, Keyring.from_file(keys)) as f:
        assert f.read() == DATA
    assert cli("decrypt", dest, "--key-file", keys).stdout == DATA
    proc = cli("store", src, tmp_path / "never", "--key-file", keys, "--max-size", "1K")
    assert proc.returncode == 5 and not (tmp_path / "never").exists()
    proc = cli("decrypt", dest)
    assert proc.returncode == 2 and "--key-file" in error_line(proc, "decrypt")
    proc = cli("decrypt", src, "--key-file", keys)
    assert proc.returncode == EXIT_DECRYPT
    assert "not a streamstore encrypted object" in error_line(proc, "decrypt")


def test_keygen_and_help() -> None:
    first, second = cli("keygen", "a").stdout, cli("keygen", "a").stdout
    assert first != second
    proc = cli("keygen", "has space")
    assert proc.returncode == 2 and "invalid key id" in error_line(proc, "keygen")
    assert "--key-file" in cli("put", "--help").stdout.decode()
    assert "decrypt" in cli("--help").stdout.decode()
    assert "cannot decrypt" in EXIT_CODES[EXIT_DECRYPT]


def test_without_the_crypto_extra(tmp_path: Path, keys: Path) -> None:
    """Without cryptography installed (simulated by blocking its import), the
    module and the CLI say which extra to install."""
    block = "import sys; sys.modules['cryptography'] = None; "
    proc = subprocess.run([sys.executable, "-c", block + "import streamstore.crypto"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "pip install 'streamstore[crypto]'" in proc.stderr
    code = (block + "from streamstore._cli import main; "
            f"sys.exit(main(['put', {str(tmp_path / 'store')!r}, '--key-file', {str(keys)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, input="")
    assert proc.returncode == 2
    assert "streamstore[crypto]" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "store").exists()
