"""Files the project writes and reads: atomic writes (temp file + fsync + rename) and reads that fail with one
clear error naming the file and what is wrong with it.

Every file the project writes into a work directory or an output folder goes through `atomic_write` /
`atomic_path`, so a crash or a full disk leaves either the old file or the new one, never a truncated mix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from typing import Any, Iterator

from llm_jax.errors import StorageError, UserError

# errno values that say "the input is wrong" (the user can fix the path); any other OSError is storage trouble
_USER_ERRNOS = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENAMETOOLONG,
                errno.EROFS, errno.EEXIST}


class FileFormatError(UserError):
    """A file exists but its content cannot be used (not JSON, truncated, wrong layout)."""


def os_error(e: OSError, action: str, path: str) -> UserError | StorageError:
    """One error for an OSError while `action`ing `path`: UserError for a wrong path, StorageError otherwise."""
    reason = e.strerror or str(e)
    cls = UserError if e.errno in _USER_ERRNOS else StorageError
    return cls(f"cannot {action} {path}: {reason}")


def _read_umask() -> int:
    mask = os.umask(0)  # read once, at import: setting it later races with threads creating files
    os.umask(mask)
    return mask


UMASK = _read_umask()


def fsync_dir(directory: str) -> None:
    """Makes a rename inside `directory` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path`; when the block succeeds the file written there is fsynced and
    renamed onto `path`. On any failure the temporary file is removed and `path` is untouched. For libraries
    that insist on writing to a path themselves (sentencepiece, safetensors, tensorboard)."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp-")
    except OSError as e:
        raise os_error(e, "write", path) from e
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise os_error(e, "write", path) from e
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_dir(directory)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def atomic_write(path: str, data: bytes | str) -> None:
    """Writes `data` to `path` atomically (str is written as UTF-8)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(payload)


def atomic_write_json(path: str, obj: Any, **dump_kwargs) -> None:
    atomic_write(path, json.dumps(obj, **dump_kwargs))


def read_bytes(path: str, what: str = "file") -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise os_error(e, f"read {what}", path) from e


def read_text(path: str, what: str = "file") -> str:
    raw = read_bytes(path, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileFormatError(f"{what} {path} is not UTF-8 text (invalid byte at offset {e.start})") from e


def read_json(path: str, what: str = "JSON file", expect: type | None = dict) -> Any:
    """The parsed content of `path`; one FileFormatError naming the file for empty, truncated or invalid JSON
    (and for a top-level value that is not of type `expect`)."""
    text = read_text(path, what)
    if not text.strip():
        raise FileFormatError(f"{what} {path} is empty (was its write interrupted?)")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        truncated = e.pos >= len(text.rstrip()) or not text.rstrip().endswith(("}", "]"))
        raise FileFormatError(f"{what} {path} is not valid JSON ({e.msg}, line {e.lineno} column {e.colno})"
                              f"{'; it looks truncated' if truncated else ''}") from e
    if expect is not None and not isinstance(value, expect):
        raise FileFormatError(f"{what} {path} holds a JSON {type(value).__name__}, expected a {expect.__name__}")
    return value


def drop_torn_last_line(path: str) -> None:
    """A process killed while appending a line leaves it without its newline: cut it off so that the next
    append starts on a line of its own (the torn record is lost either way)."""
    try:
        with open(path, "rb+") as f:
            content = f.read()
            if content and not content.endswith(b"\n"):
                f.truncate(content.rfind(b"\n") + 1)
    except FileNotFoundError:
        return
    except OSError as e:
        raise os_error(e, "repair", path) from e


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON line to a small append-only log (after dropping a torn last line), fsynced."""
    drop_torn_last_line(path)
    try:
        with open(path, "ab") as f:
            f.write((json.dumps(record) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise os_error(e, "append to", path) from e


def _json_object(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: str, what: str = "JSON-lines file", missing_ok: bool = False) -> list[dict]:
    """Every object of an append-only JSON-lines file. A crash can cut the last line short: it is skipped; when
    a writer later appended to that cut line, the whole record after the cut is kept. Any other line that is not
    a JSON object is a FileFormatError naming the file and the line."""
    if missing_ok and not os.path.lexists(path):
        return []
    lines = [(n, line) for n, line in enumerate(read_bytes(path, what).decode("utf-8", "replace").splitlines(), 1)
             if line.strip()]
    records = []
    for k, (number, line) in enumerate(lines):
        record = _json_object(line)
        if record is None:  # a cut record, perhaps with a whole one appended after it
            tails = (_json_object(line[j:]) for j in range(1, len(line)) if line[j] == "{")
            record = next((r for r in tails if r is not None), None)
        if record is not None:
            records.append(record)
        elif k != len(lines) - 1:
            raise FileFormatError(f"{what} {path}, line {number}: not a JSON object ({line[:80]!r}); delete the "
                                  f"line or the file to go on")
    return records


def check_writable_dir(path: str) -> None:
    """Creates `path` if needed and proves a file can be created in it (os.access is not enough: root passes
    it on read-only mounts); one error naming the path otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".llm_jax-write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise os_error(e, "write in directory", path) from e


def check_new_output(path: str, flag: str = "--out", error: type[UserError] = UserError) -> None:
    """Refuses, before any work starts, an output directory that cannot be created or already holds something:
    an existing file, a non-empty directory, a path under a file, or a parent where nothing can be written — as
    one `error` (the calling command's own UserError class)."""
    path = os.path.abspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise error(f"{flag} {path} exists and is not a directory; choose a new {flag}")
    if os.path.isdir(path) and os.listdir(path):
        raise error(f"{flag} {path} exists and is not empty; choose a new {flag}")
    ancestor = path
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise error(f"{flag} {path} cannot be created: {ancestor} is a file, not a directory")
    try:  # os.access is not enough: root passes it on read-only mounts
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".llm_jax-write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise error(f"{flag} {path} cannot be created: nothing can be written in {ancestor} "
                    f"({e.strerror or e})") from e
