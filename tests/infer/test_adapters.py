"""Adapters alone: `export --adapters-only` of a LoRA and of a prefix-tuning run, put back on the base they were
trained from (`infer.load.with_adapter`, `generate --adapter`): each equals its full run, both share the base."""

import json

import numpy as np
import pytest

from helpers import comparison_sft_file, run_cli, sft_overrides
from llm_jax import config as config_lib
from llm_jax.infer.export import export_params
from llm_jax.infer.load import WorkdirError, load_workdir, with_adapter


def test_adapters_alone_switch_on_one_base(trained, tmp_path):
    from llm_jax.train.loop import train
    _, base = trained
    data = comparison_sft_file(tmp_path / "sft.jsonl")
    runs = {}
    for method in ("lora", "prefix"):
        cfg = config_lib.load_config(f"{base}/config.json", sft_overrides(base, data, **{
            "train.steps": 5, "train.lr": 1e-2, "model.peft": method, "model.prefix_len": 2}))
        train(cfg, str(tmp_path / method), log=lambda _: None)
        runs[method] = export_params(str(tmp_path / method), str(tmp_path / f"{method}_alone"),
                                     adapters_only=True)["out"]
    loaded = load_workdir(base)
    ids = np.random.default_rng(0).integers(0, 300, (2, 12))
    outputs = {}
    for method, alone in runs.items():
        adapted = with_adapter(loaded, alone)
        full = load_workdir(str(tmp_path / method))
        outputs[method] = np.asarray(adapted.model.apply({"params": adapted.params}, ids))
        np.testing.assert_array_equal(outputs[method], np.asarray(full.model.apply({"params": full.params}, ids)))
        assert adapted.params["embed"]["embedding"] is loaded.params["embed"]["embedding"]  # the base is shared
    assert np.abs(outputs["lora"] - outputs["prefix"]).max() > 1e-4
    plain = np.asarray(loaded.model.apply({"params": loaded.params}, ids))
    assert np.abs(outputs["lora"] - plain).max() > 0
    with pytest.raises(WorkdirError, match="not an adapter"):
        with_adapter(loaded, base)
    proc = run_cli("generate", "--workdir", base, "--adapter", runs["lora"], "--prompt", "3 7?", "--max-new-tokens", 3,
                   "--temperature", 0, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    whole = run_cli("generate", "--workdir", tmp_path / "lora", "--prompt", "3 7?", "--max-new-tokens", 3,
                    "--temperature", 0, "--json")
    last = lambda p: json.loads(p.stdout.strip().splitlines()[-1])  # noqa: E731
    assert last(proc)["completion"] == last(whole)["completion"]
