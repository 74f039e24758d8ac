import json
import os

import pytest

from llm_jax import config as config_lib
from llm_jax.config import ConfigError, load_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load(overrides=None, path=None, n_devices=1):
    return load_config(path, overrides or {}, n_devices=n_devices)


def test_default_config_is_valid_and_resolved():
    cfg = load()
    assert cfg.model.n_kv_heads == cfg.model.n_heads
    assert cfg.model.head_dim == cfg.model.d_model // cfg.model.n_heads
    assert cfg.model.d_ff == 4 * cfg.model.d_model


@pytest.mark.parametrize("name", sorted(f[:-3] for f in os.listdir(CONFIGS) if f.endswith(".py")))
def test_shipped_configs_load_and_document_themselves(name):
    path = os.path.join(CONFIGS, f"{name}.py")
    cfg = load_config(path, {}, n_devices=None)
    assert cfg.name == name
    text = open(path).read()
    for section in ("Purpose:", "Run:", "Reaches:"):
        assert section in text, f"{name}.py docstring lacks {section}"


def test_overrides_are_typed():
    cfg = load({"model.n_layers": "3", "train.lr": "1e-3", "model.tie_embeddings": "false", "model.norm": "rmsnorm",
                "mesh.rules": "(('batch', 'data'),)"})
    assert cfg.model.n_layers == 3 and isinstance(cfg.model.n_layers, int)
    assert cfg.train.lr == 1e-3
    assert cfg.model.tie_embeddings is False
    assert cfg.model.norm == "rmsnorm"
    assert cfg.mesh.rules == (("batch", "data"),)


def test_swiglu_width_follows_llama_rule():
    assert config_lib.swiglu_width(4096, 256) == 11008
    assert load({"model.ffn": "swiglu"}).model.d_ff == config_lib.swiglu_width(256, 256)


@pytest.mark.parametrize("overrides, message", [
    ({"model.n_layrs": "3"}, "unknown config key 'model.n_layrs'.*did you mean model.n_layers"),
    ({"model.n_heads": "5"}, r"model.n_heads=5 does not divide model.d_model=256"),
    ({"model.n_kv_heads": "3"}, r"model.n_kv_heads=3 must divide model.n_heads=4"),
    ({"train.steps": "-5"}, r"train.steps=-5: must be a positive integer"),
    ({"train.steps": "ten"}, r"train.steps=ten: expected an integer"),
    ({"model.norm": "batchnorm"}, r"model.norm='batchnorm': must be one of"),
    ({"model.dropout": "1.5"}, r"model.dropout=1.5"),
    ({"train.micro_batches": "3"}, r"train.micro_batches=3 must divide train.batch_size=8"),
    ({"train.warmup_steps": "5000"}, r"train.warmup_steps=5000"),
    ({"model.tie_embeddings": "maybe"}, r"expected true or false"),
    ({"mesh.rules": "(('batch', 'pod'),)"}, r"names mesh axis 'pod'"),
    ({"model.scan_unroll": "3"}, r"model.scan_unroll=3: must divide model.n_layers=4"),
])
def test_bad_values_name_key_and_rule(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(overrides)


@pytest.mark.parametrize("mesh, devices, message", [
    ({"mesh.data": "2", "mesh.fsdp": "2"}, 8,
     r"stage\*data\*fsdp\*expert\*context\*tensor = 1\*2\*2\*1\*1\*1 = 4, but there are 8 devices"),
    ({"mesh.data": "-1", "mesh.fsdp": "-1"}, 8, r"only one axis may be -1"),
    ({"mesh.data": "-1", "mesh.tensor": "3"}, 8, r"do(es)? not divide the 8 devices"),
    ({"mesh.data": "0"}, 8, r"mesh.data=0"),
])
def test_mesh_must_fit_the_devices(mesh, devices, message):
    with pytest.raises(ConfigError, match=message):
        load(mesh, n_devices=devices)


def test_mesh_fill_axis_and_batch_divisibility():
    assert config_lib.mesh_shape(load(n_devices=8), 8) == dict(stage=1, data=8, fsdp=1, expert=1, context=1,
                                                               tensor=1)
    cfg = load({"mesh.data": "-1", "mesh.tensor": "2", "mesh.expert": "2"}, n_devices=8)
    assert config_lib.mesh_shape(cfg, 8) == dict(stage=1, data=2, fsdp=1, expert=2, context=1, tensor=2)
    with pytest.raises(ConfigError, match="must divide evenly over mesh.data\\*mesh.fsdp\\*mesh.expert = 8"):
        load({"train.batch_size": "12"}, n_devices=8)
    assert config_lib.mesh_shape(load({"mesh.context": "4"}, n_devices=8), 8)["context"] == 4
    with pytest.raises(ConfigError, match="model.seq_len=256 must divide evenly over mesh.context=3"):
        load({"mesh.context": "3", "mesh.data": "1"}, n_devices=3)


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(path=str(tmp_path / "nope.py"))
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match="failed to load: SyntaxError"):
        load(path=str(broken))
    no_fn = tmp_path / "nofn.py"
    no_fn.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="has no get_config"):
        load(path=str(no_fn))
    unknown = tmp_path / "unknown.py"
    unknown.write_text("from llm_jax.config import default_config\n"
                       "def get_config():\n    c = default_config()\n    c.model.widht = 3\n    return c\n")
    with pytest.raises(ConfigError, match="unknown config key 'model.widht'"):
        load(path=str(unknown))


def test_partial_config_file_gets_defaults(tmp_path):
    partial = tmp_path / "partial.py"
    partial.write_text("import ml_collections\n"
                       "def get_config():\n    return ml_collections.ConfigDict({'model': {'n_layers': 2}})\n")
    cfg = load(path=str(partial))
    assert cfg.model.n_layers == 2 and cfg.model.d_model == config_lib.default_config().model.d_model


def test_json_round_trip():
    cfg = load({"mesh.fsdp": "1"})
    back = config_lib.config_from_json(config_lib.to_json(cfg))
    assert json.loads(config_lib.to_json(back)) == json.loads(config_lib.to_json(cfg))
    assert back.mesh.rules == cfg.mesh.rules
