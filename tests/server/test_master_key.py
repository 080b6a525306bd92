"""The master key as an operator meets it: `soma keys rotate` re-wraps the keys of a stopped server and the data
still reads; a running server refuses rotation; a wrong or world-readable key file stops start-up in one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import SOMA, ServerProcess, new_user, soma_env, start_server
from tests.server_api import auth
from voice_server.security.keys import load_master_keys

pytestmark = pytest.mark.timeout(300)


def soma(server_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SOMA, *args], env=soma_env(server_dir), capture_output=True, text=True, timeout=120)


def upload(server: ServerProcess, token: str, data: bytes) -> str:
    r = httpx.post(server.base_url + "/v1/media", params={"name": "n.bin"}, content=data,
                   headers=auth(token))
    assert r.status_code == 201, r.text
    media_id: str = r.json()["id"]
    return media_id


def download(server: ServerProcess, token: str, media_id: str) -> bytes:
    r = httpx.get(server.base_url + f"/v1/media/{media_id}/content", headers=auth(token))
    assert r.status_code == 200, r.text
    return r.content


def test_rotation_keeps_data_and_wrong_keys_are_refused(tmp_path: Path) -> None:
    """Rotate with the server stopped (refused while it runs), restart, read the file back; then a foreign key
    file and a world-readable one each stop start-up with a clear error."""
    srv = start_server(tmp_path, SOMA_SIGNUP="open")
    try:
        _, token = new_user(srv, "keys")
        media_id = upload(srv, token, b"before rotation")
        running = soma(srv.data_dir, "keys", "rotate")
        assert running.returncode == 2 and "stop it first" in running.stderr
    finally:
        assert srv.stop() == 0
    key_file = srv.data_dir / "master.key"
    before = key_file.read_bytes()
    rotated = soma(srv.data_dir, "keys", "rotate")
    assert rotated.returncode == 0 and "data keys re-wrapped" in rotated.stdout, rotated.stderr
    assert key_file.read_bytes() != before and oct(key_file.stat().st_mode)[-3:] == "600"

    srv = start_server(tmp_path, SOMA_SIGNUP="open")
    try:
        assert download(srv, token, media_id) == b"before rotation"
    finally:
        srv.stop()

    key_file.replace(tmp_path / "rotated.key")
    with pytest.raises(AssertionError, match="is missing but this database holds encrypted data"):
        start_server(tmp_path, timeout=60)
    assert not key_file.exists()  # no fresh key was made up over encrypted data
    _write_foreign_key(key_file)
    with pytest.raises(AssertionError, match="not the one this database"):
        start_server(tmp_path, timeout=60)
    (tmp_path / "rotated.key").replace(key_file)
    key_file.chmod(0o644)
    with pytest.raises(AssertionError, match="readable by other users"):
        start_server(tmp_path, timeout=60)
    key_file.chmod(0o600)
    srv = start_server(tmp_path)
    try:
        assert download(srv, token, media_id) == b"before rotation"
    finally:
        srv.stop()


def _write_foreign_key(path: Path) -> None:
    """A valid key file holding some other master key."""
    scratch = path.with_name("foreign.key")
    load_master_keys(scratch, create=True)
    scratch.replace(path)
