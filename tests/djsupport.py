"""Shared by the Django tests: settings, a multipart encoder, real servers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import django

from exsupport import free_port, running

TESTS = Path(__file__).resolve().parent
BOUNDARY = "streamstore-test-boundary-7c1f"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def setup_django() -> None:
    """Configure the test project once per process."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproject.settings")
    from django.apps import apps

    if not apps.ready:
        django.setup()
        from django.test.utils import setup_test_environment

        setup_test_environment()


Field = tuple[str, str]
FilePart = tuple[str, str, str, bytes]  # field name, file name, content type, bytes


def multipart(fields: Sequence[Field] = (), files: Sequence[FilePart] = (), *,
              close: bool = True, base64_files: bool = False) -> bytes:
    """A multipart/form-data body (fields first, then files) with :data:`BOUNDARY`."""
    import base64

    out = bytearray()
    for name, value in fields:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    for name, filename, content_type, data in files:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n").encode()
        if base64_files:
            out += b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(data)
        else:
            out += b"\r\n" + data
        out += b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


@contextmanager
def django_server(kind: str, media: Path, log: Path) -> Iterator[tuple[str, int]]:
    """Run the test project under ``runserver`` (WSGI) or ``uvicorn`` (ASGI) on a
    free loopback port; yields (base URL, server pid); stopped by pid."""
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "djproject.settings",
           "STREAMSTORE_TEST_MEDIA": str(media),
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    if kind == "wsgi":
        cmd = [sys.executable, "-m", "django", "runserver", "--noreload",
               f"127.0.0.1:{port}"]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "--no-access-log", "--host", "127.0.0.1",
               "--port", str(port), "djproject.asgi:application"]
    with running(cmd, port, log, env=env, cwd=str(TESTS)) as pid:
        yield f"http://127.0.0.1:{port}", pid


def written_bytes(pid: int) -> int:
    """Bytes process ``pid`` has passed to write(2) and friends so far (``wchar``)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "wchar":
            return int(value)
    raise RuntimeError("no wchar in /proc/PID/io")
