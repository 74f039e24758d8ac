"""`read_text_for_eval`: every file that is not UTF-8 text is one UserError naming it."""

import pytest

from llm_jax.errors import UserError
from llm_jax.eval.textfile import read_text_for_eval


def test_text_is_read_and_a_byte_order_mark_dropped(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffTo be, or not to be:\tthat is the question.\r\n\x1b[0m".encode("utf-8"))
    assert read_text_for_eval(str(path)) == "To be, or not to be:\tthat is the question.\r\n\x1b[0m"


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.mkdir(), "is a directory, not a file"),
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_bytes(b"PK\x03\x04\x14\x00\x00\x00" + b"text" * 100), r"looks binary \(NUL bytes in its first"),
    (lambda p: p.write_bytes(bytes(range(1, 32)) * 20 + b"a few words"), r"looks binary \(\d+% control bytes"),
    (lambda p: p.write_bytes("caf\u00e9 ".encode("utf-8") * 3 + b"\xff rest"), "is not UTF-8 text: invalid byte 0xff "
                                                                               "at offset 18"),
])
def test_files_that_are_not_text_are_one_error_naming_them(tmp_path, make, problem):
    path = tmp_path / "input.txt"
    make(path)
    with pytest.raises(UserError, match=problem) as e:
        read_text_for_eval(str(path))
    assert str(e.value).startswith(f"--text {path} ")
