"""The TPU splash kernel, run here in Pallas interpret mode (the same kernel program, evaluated op by op on the
CPU): forward and gradients equal the xla path for the masks it takes, with GQA/MQA; `auto` picks it on a TPU
and falls back, naming why, for the masks it cannot take; a whole model under `attention_impl=splash`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from llm_jax.models import build_model
from llm_jax.models.attention import choose_impl, xla_attention
from llm_jax.models.masks import MaskArrays, MaskSpec
from llm_jax.models.splash import splash_attention

B, L = 2, 256
SEG = jnp.asarray(np.sort(np.random.RandomState(0).randint(0, 3, (B, L)), 1))
MASKS = {
    "causal": (MaskSpec(), MaskArrays()),
    "bidirectional": (MaskSpec(causal=False), MaskArrays()),
    "document": (MaskSpec(), MaskArrays(SEG, SEG)),
    "window": (MaskSpec(window=70), MaskArrays()),
    "window_bidirectional": (MaskSpec(causal=False, window=40), MaskArrays()),
    "document_window": (MaskSpec(window=100), MaskArrays(SEG, SEG)),
}


def _qkv(K, G, dtype, d=8):
    r = np.random.RandomState(1)
    return [jnp.asarray(r.randn(*shape), dtype) for shape in ((B, L, K, G, d), (B, L, K, d), (B, L, K, d))]


@pytest.mark.parametrize("heads", [(2, 2), (1, 4)], ids=["gqa", "mqa"])
@pytest.mark.parametrize("mask", list(MASKS))
def test_splash_matches_xla_forward_and_gradients(mask, heads):
    spec, arrays = MASKS[mask]
    q, k, v = _qkv(*heads, jnp.float32)
    w = jnp.asarray(np.random.RandomState(2).randn(*q.shape), jnp.float32)
    ref = lambda q, k, v: xla_attention(q, k, v, spec, arrays, 0.3)  # noqa: E731
    # 128-token tiles (the kernel's smallest) over 256 positions: windows leave a tile empty, which it skips
    kernel = lambda q, k, v: splash_attention(q, k, v, spec, arrays, 0.3, 128, interpret=True)  # noqa: E731
    np.testing.assert_allclose(jax.jit(kernel)(q, k, v), ref(q, k, v), atol=1e-5)
    grads = [jax.jit(jax.grad(lambda *a, f=f: (f(*a) * w).sum(), (0, 1, 2)))(q, k, v) for f in (ref, kernel)]
    for expected, got in zip(*grads):
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_splash_matches_xla_in_bfloat16():
    spec, arrays = MASKS["document_window"]
    q, k, v = _qkv(2, 2, jnp.bfloat16)
    ref = xla_attention(q, k, v, spec, arrays, 0.3).astype(jnp.float32)
    got = splash_attention(q, k, v, spec, arrays, 0.3, 128, interpret=True).astype(jnp.float32)
    np.testing.assert_allclose(got, ref, atol=2e-2)


def test_auto_picks_splash_on_a_tpu_and_names_what_it_cannot_take():
    none, causal = MaskArrays(), MaskSpec()
    assert choose_impl("auto", "tpu", "bfloat16", causal, none, False, 4096, 512) == \
        ("splash", "TPU, a mask the splash kernel takes")
    assert choose_impl("auto", "tpu", "float32", MaskSpec(window=256), MaskArrays(SEG, SEG), False, 256)[0] == "splash"
    impl, why = choose_impl("auto", "tpu", "bfloat16", causal, MaskArrays(prefix_B=jnp.asarray([3])), False, 4096)
    assert impl == "blockwise" and "splash: a padding/prefix mask" in why
    impl, why = choose_impl("auto", "tpu", "bfloat16", MaskSpec(stride=64), none, False, 4096)
    assert impl == "blockwise" and "strided" in why
    impl, why = choose_impl("auto", "tpu", "bfloat16", causal, none, False, 4096, 64)
    assert impl == "blockwise" and "a 64-token tile (the kernel needs multiples of 128" in why
    assert choose_impl("auto", "tpu", "float32", causal, none, True, 4096)[0] == "xla"  # T5's bias
    assert choose_impl("auto", "cpu", "float32", causal, none, False, 4096)[0] == "blockwise"  # never off a TPU
    assert choose_impl("splash", "cpu", "float32", causal, none, False, 256, 128)[1].startswith("requested; Pallas")
    with pytest.raises(ValueError, match="splash cannot run this attention: a padding/prefix mask"):
        choose_impl("splash", "tpu", "bfloat16", causal, MaskArrays(padding_BS=SEG > 0), False, 4096)
    with pytest.raises(ValueError, match="length 640 is not a multiple of the 256-token tile"):
        choose_impl("splash", "cpu", "float32", causal, none, False, 640, 256)


def test_a_model_with_splash_attention_equals_xla():
    """Local/global layers, GQA and packed documents through the whole model (interpret mode on this CPU)."""
    cfgs = [small_config(seq_len=128, n_kv_heads=1, attention_window=32, local_global_pattern=2,
                         attention_block=128, attention_impl=impl).model for impl in ("xla", "splash")]
    tokens = jnp.asarray(np.random.RandomState(3).randint(0, 256, (2, 128)))
    segments = jnp.asarray(np.repeat([[1, 2]], 64, axis=1).reshape(1, 128).repeat(2, 0))
    params = build_model(cfgs[0]).init(jax.random.key(0), tokens)["params"]
    outs = [build_model(cfg).apply({"params": params}, tokens, segments_BL=segments) for cfg in cfgs]
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-4)


SHARDED = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
sys.path.insert(0, "tests")
from helpers import small_config
from llm_jax.models.attention import xla_attention
from llm_jax.models.masks import MaskArrays, MaskSpec
from llm_jax.models.splash import splash_attention
from llm_jax.parallel.mesh import activate, make_mesh, rules_tuple

out = {}
for layout in sys.argv[1:]:
    data, context, tensor = (int(x) for x in layout.split(","))
    cfg = small_config(seq_len=256, n_heads=4, n_kv_heads=2)
    cfg.mesh.update(data=data, fsdp=1, context=context, tensor=tensor)
    mesh = make_mesh(cfg)
    r = np.random.RandomState(0)
    q, k, v = (jnp.asarray(r.randn(*s), jnp.float32) for s in ((2, 256, 2, 2, 8), (2, 256, 2, 8), (2, 256, 2, 8)))
    seg = jnp.asarray(np.sort(r.randint(0, 3, (2, 256)), 1))
    spec, arrays = MaskSpec(window=100), MaskArrays(seg, seg)
    loss = lambda f: lambda q, k, v: (f(q, k, v) ** 2).sum()
    kernel = lambda q, k, v: splash_attention(q, k, v, spec, arrays, 0.3, 128, interpret=True)
    with activate(mesh, rules_tuple(cfg)):
        q = jax.device_put(q, NamedSharding(mesh, P("data", "context")))
        got = jax.jit(jax.value_and_grad(loss(kernel), (0, 1, 2)))(q, k, v)
        text = jax.jit(kernel).lower(q, k, v).as_text()
    ref = jax.value_and_grad(loss(lambda q, k, v: xla_attention(q, k, v, spec, arrays, 0.3)), (0, 1, 2))(q, k, v)
    pairs = zip(jax.tree.leaves(got), jax.tree.leaves(ref))
    # relative to each leaf's largest entry: the loss is a sum of 8,192 squares, where float32 rounding alone is ~1e-4
    out[layout] = {"error": max(float(jnp.abs(a - b).max() / jnp.maximum(1.0, jnp.abs(b).max())) for a, b in pairs),
                   "shard_map": "shard_map" in text or "manual" in text}
print(json.dumps(out))
"""


def test_splash_under_a_mesh_splits_batch_heads_and_query_length(tmp_path):
    """8 fake devices, data 2 x context 2 x tensor 2 and context 2 x tensor 4 (2 K/V heads: replicated over
    tensor): the kernel runs per shard inside shard_map, its mask tables split with the query length, and
    equals the xla path (loss and gradients)."""
    import json
    import subprocess
    import sys
    from helpers import REPO
    script = tmp_path / "sharded_splash.py"
    script.write_text(SHARDED)
    proc = subprocess.run([sys.executable, str(script), "2,2,2", "1,2,4"], capture_output=True, text=True, cwd=REPO,
                          env={**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for layout, result in out.items():
        assert result["error"] < 1e-5 and result["shard_map"], (layout, result)
