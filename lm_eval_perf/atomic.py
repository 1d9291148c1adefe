"""Atomic files: a reader sees the previous file or the new one, never a part of it.

Every file this project writes for later reading (results, state, records, tables) goes through
:func:`write_atomic`: a temporary file in the same folder, flushed to disk, then ``os.replace``.
:func:`check_writable` tells before any work whether a folder can be written, and leaves nothing
behind; :func:`publish` gives a folder that was written privately (``mkdtemp`` makes folders 0700,
safetensors writes its files 0600) the modes ordinary new files and folders get under the umask.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from lm_eval_perf.errors import UserInputError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask (mkstemp uses 0600)."""
    return 0o666 & ~_umask()


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file in the same folder and
    ``os.replace``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def publish(folder: Path) -> None:
    """Give ``folder``, its subfolders and files the modes ``mkdir()`` and ``open()`` give new ones
    under the current umask (0755 and 0644 under the usual umask 022)."""
    umask = _umask()
    for path in [folder, *Path(folder).rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def check_writable(folder: Path, where: str) -> None:
    """A one-line :class:`UserInputError` naming ``where`` unless ``folder`` is, or can be created
    as, a writable folder.

    It finds out by doing it: the missing folders are created and a probe file is written into
    ``folder``; all of them are removed again, so a run that fails later leaves no empty folder.
    """
    folder = Path(folder).expanduser()
    missing = []
    existing = folder
    while not existing.exists() and existing.parent != existing:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f"{where}: {folder} is not writable: {existing} is a file, not a folder")
    created: list[Path] = []
    try:
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):  # made by another process meanwhile: not ours
                path.mkdir()
                created.append(path)
        tempfile.TemporaryFile(dir=folder, prefix=".lm-eval-perf-write-test-").close()
    except OSError as exc:
        raise UserInputError(f"{where}: {folder} is not writable: {exc.strerror or exc}") from exc
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()
