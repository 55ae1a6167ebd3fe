"""Files the server cannot write, for tests of what it does then.

``read_only`` makes a file unwritable for the test's processes, even when the tests run as
root (as in CI containers), whom file modes do not stop: then the file is made immutable
(``chattr +i``, on file systems that have it). Where neither works, the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` cannot be written (nor opened for writing) within the block."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o400)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
        pytest.skip("root writes any file, and this file system cannot make one immutable")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)
