"""Reading a text file that a command scores (`--text`, `--data`): one clear error for any file that is not text.
Kept apart from the model code so that the command line can build its parsers without importing JAX."""

from __future__ import annotations

import os

from llm_jax.errors import UserError
from llm_jax.fileio import read_bytes

BINARY_SNIFF_BYTES = 8192
BINARY_CONTROL_FRACTION = 0.3  # more control bytes than this in the first 8 KB: not text
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\x1b")  # whitespace and the escape of ANSI colour codes


def read_text_for_eval(path: str, flag: str = "--text") -> str:
    """The UTF-8 text of `path`, or one UserError naming it: a directory, a missing, unreadable or empty file, a
    binary file (NUL bytes, or mostly control bytes, in its first 8 KB), or invalid UTF-8 (with the offset)."""
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a directory, not a file")
    if not os.path.exists(path):
        raise UserError(f"{flag} {path} does not exist")
    raw = read_bytes(path, f"{flag} file")
    if not raw:
        raise UserError(f"{flag} {path} is empty: there is nothing to score")
    head = raw[:BINARY_SNIFF_BYTES]
    controls = sum(1 for b in head if (b < 32 or b == 127) and b not in _TEXT_CONTROLS)
    if b"\0" in head or controls > BINARY_CONTROL_FRACTION * len(head):
        what = "NUL bytes" if b"\0" in head else f"{controls / len(head):.0%} control bytes"
        raise UserError(f"{flag} {path} looks binary ({what} in its first {len(head):,} bytes), not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{flag} {path} is not UTF-8 text: invalid byte 0x{raw[e.start]:02x} at offset "
                        f"{e.start:,}") from None
    return text.removeprefix("\ufeff")  # a byte-order mark is not part of the text
