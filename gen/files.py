"""Atomic file output: write to a temporary name in the same folder, then rename."""

import os
import tempfile

__all__ = ["write_atomic"]


def write_atomic(path, data):
    """Write ``data`` (str or bytes) to ``path`` so that readers see the old file or the new one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(handle, mode) as file:
            file.write(data)
        # mkstemp creates the file with mode 0600; give it the mode open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
