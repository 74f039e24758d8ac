"""A damaged work directory is one WorkdirError naming it; `export --out` is checked first and written atomically;
empty prompts and texts are clear UserErrors."""

import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import small_config

from llm_jax import checkpoint
from llm_jax import config as config_lib
from llm_jax.errors import UserError
from llm_jax.infer.export import export_params
from llm_jax.infer.load import WorkdirError, load_workdir, read_config
from llm_jax.models import build_model


@functools.lru_cache(maxsize=None)
def _params():
    model = build_model(small_config().model)
    return nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])


def make_workdir(path, tokenizer=True) -> str:
    """A parameters-only work directory of a tiny random model (config.json, char tokenizer, checkpoint 0)."""
    from llm_jax.data.tokenizers import CharTokenizer
    os.makedirs(path, exist_ok=True)
    checkpoint.save_params(str(path), _params())
    if tokenizer:
        CharTokenizer.train(["to be or not to be"]).save(str(path))
    (path / "config.json").write_text(config_lib.to_json(small_config()))
    return str(path)


@pytest.mark.parametrize("content, problem", [
    ("", "is empty"),
    ('{"model": {"d_model": 32, "n_la', "is not valid JSON"),
    ("\x00\x01garbage", "is not valid JSON"),
    ("[]", "holds a JSON list, expected a dict"),
    ('{"model": {"d_modle": 32}}', "unknown config key 'model.d_modle'.*did you mean"),
    ('{"model": {"n_heads": "four"}}', "does not describe a run: TypeError: .*four"),
    ('{"model": {"n_heads": 3}}', "model.n_heads=3 does not divide model.d_model"),
])
def test_a_damaged_config_json_is_one_error_naming_the_file(tmp_path, content, problem):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(WorkdirError, match=problem) as e:
        read_config(str(tmp_path))
    assert str(tmp_path / "config.json") in str(e.value)
    assert "\n" not in str(e.value)


def test_a_directory_without_config_json_is_not_a_work_directory(tmp_path):
    with pytest.raises(WorkdirError, match="is not a work directory: it has no config.json"):
        load_workdir(str(tmp_path))


def test_a_missing_or_broken_tokenizer_names_the_work_directory(tmp_path):
    wd = make_workdir(tmp_path / "wd", tokenizer=False)
    with pytest.raises(WorkdirError, match=f"'{wd}' holds no tokenizer"):
        load_workdir(wd)
    (tmp_path / "wd" / "tokenizer.json").write_text("{not json")
    with pytest.raises(WorkdirError, match=f"cannot load tokenizer '{wd}"):
        load_workdir(wd)


def test_a_checkpoint_of_another_model_is_one_line_naming_the_workdir_and_step(tmp_path):
    wd = make_workdir(tmp_path / "wd")
    other = small_config(d_model=64)
    (tmp_path / "wd" / "config.json").write_text(config_lib.to_json(other))
    with pytest.raises(WorkdirError) as e:
        load_workdir(wd)
    message = str(e.value)
    assert wd in message and "checkpoint 0" in message and "embed/embedding" in message and "\n" not in message
    with pytest.raises(WorkdirError, match="no checkpoint 7"):
        load_workdir(wd, step=7)


def test_an_unexpected_restore_failure_is_summarised_in_one_line(tmp_path, monkeypatch):
    wd = make_workdir(tmp_path / "wd")

    def explode(*args, **kwargs):
        raise RuntimeError("orbax: something deep failed\n  File x, line 1\n    more traceback")
    monkeypatch.setattr(checkpoint, "restore_params", explode)
    with pytest.raises(WorkdirError, match=f"'{wd}': cannot restore the parameters of the checkpoint at step 3 .*"
                                           f"RuntimeError: orbax: something deep failed$"):
        load_workdir(wd, step=3)


def test_export_checks_out_first_and_writes_a_complete_directory(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(WorkdirError, match="--out .*full exists and is not empty"):
        export_params(str(tmp_path / "no-such-run"), str(tmp_path / "full"))  # refused before reading the run
    wd = make_workdir(tmp_path / "wd")
    info = export_params(wd, str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == ["checkpoints", "config.json", "tokenizer.llm_jax.json"]
    assert info["step"] == 0 and info["tokenizer"] == "tokenizer.llm_jax.json"
    for a, b in zip(jax.tree.leaves(load_workdir(wd).params), jax.tree.leaves(load_workdir(info["out"]).params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == json.loads(
        (tmp_path / "wd" / "config.json").read_text())


def test_an_empty_prompt_and_a_too_short_text_are_user_errors():
    from llm_jax.eval.perplexity import perplexity
    from llm_jax.infer.generate import generate_ids
    with pytest.raises(UserError, match="the prompt is empty"):
        generate_ids(None, None, [], 4, 16)
    with pytest.raises(UserError, match="the text has 1 token.*needs at least 2"):
        perplexity(None, None, [5], 16)
