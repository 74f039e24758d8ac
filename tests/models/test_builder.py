"""One schema, one builder: the model's view of the schema has exactly the schema's model keys, each one is
read by the modules, and every caller builds models through `build_model`."""

import dataclasses
import os
import re

import pytest

from helpers import REPO, small_config
from llm_jax import config as config_lib
from llm_jax.errors import UserError
from llm_jax.models import FAMILIES, build_model
from llm_jax.models.config import PIPELINE_FIELDS, SCHEMA_ONLY, ModelConfig

MODELS_DIR = os.path.join(REPO, "llm_jax", "models")


def test_the_view_has_exactly_the_schemas_model_keys():
    schema = set(config_lib.default_config().model.keys())
    view = {f.name for f in dataclasses.fields(ModelConfig)} - set(PIPELINE_FIELDS)
    assert view | set(SCHEMA_ONLY) == schema, (sorted(schema - view - set(SCHEMA_ONLY)), sorted(view - schema))


def test_every_field_of_the_view_is_read_by_the_modules():
    source = "".join(open(os.path.join(MODELS_DIR, f)).read() for f in os.listdir(MODELS_DIR) if f.endswith(".py"))
    # modules read `cfg.x`; the view's own properties (compute_dtype, width_mult) read `self.x`
    unread = [f.name for f in dataclasses.fields(ModelConfig)
              if not re.search(rf"\b(cfg|self|view)\.{f.name}\b", source)]
    assert unread == []


def test_a_key_the_view_does_not_know_or_lacks_is_an_error():
    model = dict(small_config().model)
    with pytest.raises(UserError, match="unknown n_expert"):
        ModelConfig.from_config({**model, "n_expert": 8})
    model.pop("rope_theta")
    with pytest.raises(UserError, match="missing rope_theta"):
        ModelConfig.from_config(model)


def test_the_family_choices_are_the_registered_families():
    assert config_lib.CHOICES["model.family"] == tuple(FAMILIES)
    assert type(build_model(small_config().model)).__name__ == "Transformer"


def test_nothing_builds_a_model_class_by_hand():
    found = []
    for root, _, names in os.walk(os.path.join(REPO, "llm_jax")):
        for name in names:
            path = os.path.join(root, name)
            if name.endswith(".py") and not path.startswith(MODELS_DIR):
                if re.search(r"\b(Transformer|ModelConfig\.from_config)\(", open(path).read()):
                    found.append(os.path.relpath(path, REPO))
    assert found == []
