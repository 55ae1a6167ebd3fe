"""The hub's own security: the private folder of the automatic hub, and secret files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from trio_chat.hub.address import (
    MIN_SECRET_BYTES,
    HubConfigError,
    private_runtime_dir,
    read_secret_file,
)

# --- The private folder of the automatic hub ---------------------------------------------------


@pytest.fixture
def runtime_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def runtime_folder(base: Path) -> Path:
    return base / f"trio-chat-{os.getuid()}"


def test_the_runtime_folder_is_made_private_whatever_the_umask(runtime_base: Path) -> None:
    old_umask = os.umask(0)
    try:
        folder = private_runtime_dir()
    finally:
        os.umask(old_umask)
    assert folder == runtime_folder(runtime_base)
    assert stat.S_IMODE(folder.lstat().st_mode) == 0o700


def test_an_existing_private_runtime_folder_is_used_as_it_is(runtime_base: Path) -> None:
    folder = runtime_folder(runtime_base)
    folder.mkdir(mode=0o700)
    (folder / "hub-1.lock").touch()
    assert private_runtime_dir() == folder
    assert (folder / "hub-1.lock").exists()


@pytest.mark.parametrize("mode", [0o701, 0o705, 0o710, 0o750, 0o755, 0o770, 0o777])
def test_a_runtime_folder_others_can_enter_is_refused(runtime_base: Path, mode: int) -> None:
    folder = runtime_folder(runtime_base)
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(HubConfigError, match="not a private folder"):
        private_runtime_dir()


def test_a_symlink_in_place_of_the_runtime_folder_is_refused(runtime_base: Path) -> None:
    # Even to a private folder: whoever made the link chose where our socket goes.
    elsewhere = runtime_base / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    runtime_folder(runtime_base).symlink_to(elsewhere)
    with pytest.raises(HubConfigError, match="not a private folder"):
        private_runtime_dir()


def test_a_file_in_place_of_the_runtime_folder_is_refused(runtime_base: Path) -> None:
    runtime_folder(runtime_base).touch(mode=0o600)
    with pytest.raises(HubConfigError):
        private_runtime_dir()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_runtime_folder_of_another_user_is_refused(runtime_base: Path) -> None:
    folder = runtime_folder(runtime_base)
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, -1)
    with pytest.raises(HubConfigError, match="not a private folder"):
        private_runtime_dir()


# --- Secret files -------------------------------------------------------------------------------


def write_secret(path: Path, secret: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(secret)
    path.chmod(mode)
    return path


def test_a_private_secret_file_is_read_without_its_line_end(tmp_path: Path) -> None:
    secret = b"s" * MIN_SECRET_BYTES
    assert read_secret_file(write_secret(tmp_path / "secret", secret + b"\n")) == secret
    assert read_secret_file(write_secret(tmp_path / "read-only", secret, 0o400)) == secret


@pytest.mark.parametrize("mode", [0o604, 0o610, 0o620, 0o640, 0o602, 0o660, 0o644, 0o666])
def test_a_secret_file_others_can_get_at_is_refused(tmp_path: Path, mode: int) -> None:
    secret = os.urandom(32).hex().encode()
    with pytest.raises(HubConfigError, match="readable by others") as refused:
        read_secret_file(write_secret(tmp_path / "secret", secret, mode))
    assert secret.decode() not in str(refused.value)


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    secret = b"s" * (MIN_SECRET_BYTES - 1)
    with pytest.raises(HubConfigError, match="too short") as refused:
        read_secret_file(write_secret(tmp_path / "secret", secret + b"\n"))
    assert secret.decode() not in str(refused.value)


def test_a_missing_secret_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(HubConfigError, match="cannot read"):
        read_secret_file(tmp_path / "absent")
