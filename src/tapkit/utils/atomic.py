"""Atomic file writes: a crash never leaves a half-written output behind, and a command
with several outputs writes none of them unless all of them can be written."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tapkit.errors import UserError


class OutputError(UserError):
    """An output that cannot be written (a directory in the way, no permission, no room)."""


def check_output_file(path: str | os.PathLike, what: str) -> None:
    """Fails in one line, before any work, when `path` cannot become a file: it is a
    directory, or its nearest existing ancestor is not a writable directory."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{what} {target} is a directory; give a file name")
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {what} {target}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {target}: {ancestor} is not writable")


def _missing_parents(target: Path) -> list[Path]:
    """The target's ancestors that do not exist yet, innermost first."""
    missing, parent = [], target.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing


def _remove_empty(folders: Sequence[Path]) -> None:
    for folder in folders:  # innermost first
        with contextlib.suppress(OSError):
            folder.rmdir()


def _stage(target: Path) -> Path:
    """An empty temporary file next to `target` (created like any new file: its
    permissions follow the umask)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    with open(tmp_path, "xb"):
        pass
    return tmp_path


def _written(tmp: Path, writer: Callable[[Path], None]) -> None:
    """writer(tmp), then the permissions the temporary file was created with (the umask's):
    some writers (safetensors' save_file) replace the file with a private 0600 one."""
    mode = tmp.stat().st_mode & 0o777
    writer(tmp)
    if tmp.stat().st_mode & 0o777 != mode:
        os.chmod(tmp, mode)


def write_all_atomic(outputs: Sequence[tuple[str | os.PathLike, Callable[[Path], None]]]) -> None:
    """Writes several outputs, each by writer(tmp_path), all or none: every temporary file
    is written first; only when all succeeded do they replace their targets. On failure
    nothing is left behind (no temporary file, no folder this call created) and an
    `OutputError` names the output that failed."""
    staged: list[tuple[Path, Path]] = []
    created: list[Path] = []
    current, done = None, False
    try:
        for path, writer in outputs:
            current = Path(path)
            if current.is_dir():
                raise IsADirectoryError(21, "Is a directory")
            created += [p for p in _missing_parents(current) if p not in created]
            tmp = _stage(current)
            staged.append((tmp, current))
            _written(tmp, writer)
        for tmp, target in staged:
            current = target
            os.replace(tmp, target)
        done = True
    except OSError as err:
        raise OutputError(f"cannot write {current}: {err.strerror or err}") from None
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if not done:
            _remove_empty(sorted(created, key=lambda p: len(p.parts), reverse=True))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path next to `path`; it replaces `path` only if the block succeeds."""
    target = Path(path)
    created = _missing_parents(target)
    tmp_path = None
    done = False
    try:
        if target.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        tmp_path = _stage(target)
        yield tmp_path
        os.replace(tmp_path, target)
        done = True
    except OSError as err:
        raise OutputError(f"cannot write {target}: {err.strerror or err}") from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        if not done:
            _remove_empty(created)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Calls writer(tmp_path) and moves the result into place, with the permissions of any
    new file (the umask's), whatever the writer did to them."""
    with atomic_path(path) as tmp:
        _written(tmp, writer)
