"""What a sailor does at its start: the files it receives, its step-info GET, and the
imports it does without (every step of a flow starts at once on two cores)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flowrun.contract import files
from flowrun.sailor.stepinfo import http_get
from tests.conftest import ROOT


def archive(entries: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (content, mode) in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_unpack_writes_allowed_files_with_their_mode_only(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    allowed = str(tmp_path / "etc" / "flowrun") + "/"
    monkeypatch.setattr(files, "ALLOWED", (allowed,))
    inside = allowed.lstrip("/")
    written = files.unpack(archive({
        inside + "step.json": (b'{"a": 1}', 0o400),
        inside + "../escape": (b"no", 0o644),
        "tmp/elsewhere": (b"no", 0o644),
    }))
    assert written == [allowed + "step.json"]
    target = Path(allowed) / "step.json"
    assert target.read_bytes() == b'{"a": 1}'
    assert target.stat().st_mode & 0o777 == 0o400
    assert not (tmp_path / "etc" / "escape").exists()
    assert not list(Path(allowed).glob("*.part"))


def test_receive_keeps_a_file_already_there(tmp_path: Path) -> None:
    present = tmp_path / "step.json"
    present.write_text('{"kept": true}')
    read, write = os.pipe()
    try:  # input that would overwrite it, were it read: a restart reads none
        os.write(write, b"not a tar archive")
        with open(read, "rb", closefd=False) as stdin, pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "stdin", io.TextIOWrapper(stdin))
            files.receive(str(present), wait=0)
            assert os.read(read, 100) == b"not a tar archive"  # left unread
    finally:
        os.close(read)
        os.close(write)
    assert present.read_text() == '{"kept": true}'


def test_receive_says_when_nothing_comes(tmp_path: Path) -> None:
    read, write = os.pipe()
    try:
        with open(read, "rb", closefd=False) as stdin, pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "stdin", io.TextIOWrapper(stdin))
            with pytest.raises(files.FilesMissing, match="nothing came on standard input"):
                files.receive(str(tmp_path / "missing.json"), wait=0.05)
    finally:
        os.close(read)
        os.close(write)


def test_http_get_reads_status_and_body_of_an_http10_answer() -> None:
    seen: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # as the platform services answer

        def do_GET(self) -> None:
            seen["auth"] = self.headers.get("Authorization")
            body = b'{"config": {"a": 1}}' if self.path == "/ok" else b"no"
            self.send_response(200 if self.path == "/ok" else 403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert http_get(base + "/ok", {"Authorization": "Basic x"}, 5) == (
            200, b'{"config": {"a": 1}}')
        assert seen["auth"] == "Basic x"
        assert http_get(base + "/other", {}, 5) == (403, b"no")
    finally:
        server.shutdown()
        server.server_close()


def test_the_sailor_starts_without_asyncio_inspect_crypto_or_http_client() -> None:
    probe = ("import sys; import flowrun.sailor.runtime, flowrun.sailor.stepinfo; "
             "print(' '.join(m for m in ('asyncio', 'inspect', 'dataclasses', 'cryptography', "
             "'http.client', 'urllib.request', 'jsonata') if m in sys.modules))")
    # In a fresh interpreter, as a step starts (flowrun/__init__.py imports nothing).
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.split() == []
