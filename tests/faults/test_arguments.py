"""Bad arguments and bad files given to commands: one `error:` line, exit status 2, before any work."""

import os

import pytest
from faultlib import cli, one_clear_line

from llm_jax.errors import EXIT_USAGE

GENERATE_ARGS = [
    (["--max-new-tokens", "-5"], "argument --max-new-tokens: -5 is out of range: expected a positive integer"),
    (["--temperature", "-1"], "argument --temperature: -1 is out of range: expected a finite number >= 0"),
    (["--temperature", "nan"], "argument --temperature: nan is not a finite number >= 0"),
    (["--top-p", "0"], "argument --top-p: 0 is out of range: expected a number in (0, 1]"),
    (["--top-p", "2"], "argument --top-p: 2 is out of range"),
    (["--top-p", "-1"], "argument --top-p: -1 is out of range"),
    (["--top-k", "-3"], "argument --top-k: -3 is out of range: expected an integer >= 0"),
    (["--seed", "x"], "argument --seed: 'x' is not an integer >= 0"),
    (["--json", "--jsn"], "unrecognised arguments: --jsn"),
]


@pytest.mark.fault(fault="`generate` with a negative `--max-new-tokens`, a negative or NaN `--temperature`, "
                         "`--top-p` 0 / 2 / -1, `--top-k -3`, a mistyped flag",
                   outcome="exit 2 at once, one line naming the flag and the allowed range")
@pytest.mark.parametrize("args, message", GENERATE_ARGS, ids=[" ".join(a) for a, _ in GENERATE_ARGS])
def test_generate_arguments_are_checked(finished_run, observe, args, message):
    proc = cli("generate", "--workdir", finished_run, "--prompt", "ROMEO:", *args)
    observe(proc)
    one_clear_line(proc, EXIT_USAGE, message)


@pytest.mark.fault(fault="`generate` with an empty prompt", outcome="exit 2, one line: the prompt is empty")
def test_an_empty_prompt_is_refused(finished_run, observe):
    proc = cli("generate", "--workdir", finished_run, "--prompt", "")
    observe(proc)
    one_clear_line(proc, EXIT_USAGE, "--prompt is empty")


def bad_texts(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(os.urandom(4096) + b"\0")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    return {"a directory": (tmp_path, "is a directory, not a file"),
            "a missing file": (tmp_path / "nope.txt", "does not exist"),
            "an empty file": (tmp_path / "empty.txt", "is empty"),
            "a binary file": (tmp_path / "binary.txt", "looks binary"),
            "invalid UTF-8": (tmp_path / "latin1.txt", "is not UTF-8 text: invalid byte 0xe9 at offset 3")}


@pytest.mark.fault(fault="`eval perplexity --text` given a directory, a missing, empty or binary file, or "
                         "invalid UTF-8", outcome="exit 2, one line saying which (not 'does not exist' for all)")
@pytest.mark.parametrize("case", ["a directory", "a missing file", "an empty file", "a binary file", "invalid UTF-8"])
def test_eval_text_is_checked(finished_run, tmp_path, observe, case):
    path, message = bad_texts(tmp_path)[case]
    proc = cli("eval", "perplexity", "--workdir", finished_run, "--text", path)
    observe(proc)
    one_clear_line(proc, EXIT_USAGE, message)


UNKNOWN_FLAGS = [(["export", "--workdir", "w", "--out", "o", "--stepp", "3"], "unrecognised arguments: --stepp 3"),
                 (["convert", "to-hf", "--workdir", "w", "--out", "o", "--force"], "unrecognised arguments: --force"),
                 (["scaling", "fit", "--csv", "x.csv", "--bootstrap", "-2"], "argument --bootstrap: -2 is out of range"),
                 (["tokenizer", "report", "--vocab-size", "1"], "argument --vocab-size: 1 is out of range"),
                 (["estimate", "--mfu", "1.5"], "argument --mfu: 1.5 is out of range")]


@pytest.mark.fault(fault="mistyped or out-of-range flags on other commands (`export --stepp`, `convert --force`, "
                         "`scaling fit --bootstrap -2`, `tokenizer --vocab-size 1`, `estimate --mfu 1.5`)",
                   outcome="exit 2, one line; nothing silently ignored")
@pytest.mark.parametrize("args, message", UNKNOWN_FLAGS, ids=[a[0] for a, _ in UNKNOWN_FLAGS])
def test_other_commands_reject_unknown_and_out_of_range_flags(observe, args, message):
    proc = cli(*args)
    observe(proc)
    one_clear_line(proc, EXIT_USAGE, f"llm-jax {args[0]}", message)


@pytest.mark.fault(fault="a work directory's `config.json` truncated by a full disk",
                   outcome="`generate` exits 2 with one line naming the file and the parse error")
def test_a_truncated_config_is_one_line(run_copy, observe):
    text = (run_copy / "config.json").read_text()
    (run_copy / "config.json").write_text(text[: len(text) // 2])
    proc = cli("generate", "--workdir", run_copy, "--prompt", "ROMEO:")
    observe(proc)
    one_clear_line(proc, EXIT_USAGE, f"{run_copy / 'config.json'}", "is not valid JSON")


@pytest.mark.fault(fault="`convert from-hf` of a directory whose `config.json` is not JSON, or whose safetensors "
                         "file is cut short", outcome="exit 2, one line naming the file")
@pytest.mark.parametrize("damage", ["config", "safetensors"])
def test_a_damaged_hugging_face_directory_is_one_line(tmp_path, observe, damage):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "llama", "hidden_size": 32, ' if damage == "config" else
                                    '{"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 4, "vocab_size": 64,'
                                    ' "n_positions": 16}')
    (hf / "model.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"w\": ")
    from tokenizers import Tokenizer, models
    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(hf / "tokenizer.json"))
    proc = cli("convert", "from-hf", "--hf-dir", hf, "--out", tmp_path / "out")
    observe(proc)
    one_clear_line(proc, EXIT_USAGE, str(hf / ("config.json" if damage == "config" else "model.safetensors")))
    assert not os.path.exists(tmp_path / "out")
