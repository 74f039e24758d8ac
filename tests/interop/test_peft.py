"""LoRA adapters in the Hugging Face PEFT format: a LoRA work directory on a converted tiny Llama is exported with
`to_peft`, loaded by the `peft` library onto the transformers model, and gives our logits within 1e-4; reading it
back gives the same adapters, and `from_peft` makes of it an adapters-only directory `--adapter` puts on the base."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the `hf` extra (transformers + CPU torch) is not installed")
transformers = pytest.importorskip("transformers", reason="the `hf` extra (transformers) is not installed")
peft = pytest.importorskip("peft", reason="the `hf` extra (peft) is not installed")

from llm_jax import checkpoint  # noqa: E402
from llm_jax import config as config_lib  # noqa: E402
from llm_jax.infer.load import load_workdir, with_adapter  # noqa: E402
from llm_jax.infer.export import export_params  # noqa: E402
from llm_jax.interop.hf import from_hf, to_hf  # noqa: E402
from llm_jax.interop.peft import PeftError, from_peft, read_peft, to_peft  # noqa: E402
from llm_jax.models import build_model  # noqa: E402
from llm_jax.models import peft as peft_params  # noqa: E402

from interop.test_hf import byte_bpe_tokenizer  # noqa: E402


def test_peft_export_matches_the_peft_library_and_reads_back(tmp_path):
    torch.manual_seed(0)
    hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=320, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False))
    hf_dir, base = str(tmp_path / "hf"), str(tmp_path / "base")
    hf_model.save_pretrained(hf_dir)
    byte_bpe_tokenizer(hf_dir)
    from_hf(hf_dir, base)
    loaded = load_workdir(base)

    cfg = config_lib.config_from_json(config_lib.to_json(loaded.cfg))
    cfg.model.update(peft="lora", lora_rank=4, lora_alpha=8.0, lora_targets=r"attention/(query|value|out)$|mlp/wo$")
    model = build_model(cfg.model)
    init = lambda: model.init(jax.random.key(0), np.zeros((1, 8), np.int32))["params"]  # noqa: E731
    shapes = jax.eval_shape(lambda: peft_params.split(init())[1])
    rng = np.random.default_rng(0)
    adapters = jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(np.float32), shapes)
    adapters = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x, adapters,
                            is_leaf=lambda x: hasattr(x, "unbox"))
    params = peft_params.join(jax.device_get(loaded.params), adapters)
    lora_dir = str(tmp_path / "lora")
    os.makedirs(lora_dir)
    for name in os.listdir(base):
        if os.path.isfile(os.path.join(base, name)):
            shutil.copy(os.path.join(base, name), lora_dir)
    with open(os.path.join(lora_dir, "config.json"), "w") as f:
        f.write(config_lib.to_json(cfg))
    checkpoint.save_params(lora_dir, params)

    out = str(tmp_path / "adapter")
    report = to_peft(lora_dir, out, base=hf_dir)
    assert report["targets"] == ["down_proj", "o_proj", "q_proj", "v_proj"] and report["tensors"] == 16

    ids = rng.integers(0, 320, (2, 12))
    ours = np.asarray(model.apply({"params": params}, ids))
    reference = peft.PeftModel.from_pretrained(hf_model, out)
    reference.eval()
    with torch.no_grad():
        theirs = reference(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    base_logits = np.asarray(build_model(loaded.cfg.model).apply({"params": loaded.params}, ids))
    assert np.abs(theirs - base_logits).max() > 1e-2  # the adapters matter

    back, fields = read_peft(out, jax.device_get(loaded.params), dict(loaded.cfg.model))
    assert fields["lora_rank"] == 4 and fields["lora_alpha"] == 8.0
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-7), back, adapters)
    read = from_peft(base, out, str(tmp_path / "from_peft"))  # `convert from-peft`: what --adapter reads
    on_base = with_adapter(load_workdir(base), read["out"])
    assert on_base.cfg.model.peft == "lora" and read["rank"] == 4
    np.testing.assert_allclose(np.asarray(on_base.model.apply({"params": on_base.params}, ids)), theirs, atol=1e-4)
    dora = tmp_path / "dora"  # what this reader cannot represent is refused, never dropped
    shutil.copytree(out, dora)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(PeftError, match="use_dora"):
        read_peft(str(dora), jax.device_get(loaded.params), dict(loaded.cfg.model))

    merged = load_workdir(export_params(lora_dir, str(tmp_path / "merged"), merge_lora=True)["out"])
    assert merged.cfg.model.peft == "none" and not peft_params.split(jax.device_get(merged.params))[1]
    np.testing.assert_allclose(np.asarray(merged.model.apply({"params": merged.params}, ids)), ours, atol=2e-5)
    to_hf(lora_dir, str(tmp_path / "hf_merged"))  # to-hf of a LoRA run exports the fine-tuned weights
    exported = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "hf_merged"))
    with torch.no_grad():
        np.testing.assert_allclose(exported(torch.tensor(ids)).logits.numpy(), ours, atol=1e-4)
    with pytest.raises(PeftError, match="exists|not empty|already"):
        to_peft(lora_dir, out)
    with pytest.raises(PeftError, match="no LoRA adapters"):
        to_peft(base, str(tmp_path / "none"))
