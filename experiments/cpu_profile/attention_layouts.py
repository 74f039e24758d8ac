"""Attention-layer layouts on XLA:CPU, forward + backward, the bench_cpu shape (B 8, L 256, D 384, H 6, d 64).

`current` is the einsum over (B, L, K, G, d) that xla_attention used before 2026-12-02; `inner_merged` is what it
does now (head-major copies, batched matmuls over B*K); the others are the variants docs/performance.md reports.
Each line: best of 5 x 5 runs, ms per layer, GFLOP/s, and the largest gradient difference from the first variant.
Run:  python experiments/cpu_profile/attention_layouts.py [VARIANT ...]   (default: all)
"""
import os
import sys
import time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from llm_jax import allocator
allocator.tune()  # as `llm-jax` does (set LLM_JAX_MALLOC=system to measure without it)
import jax, jax.numpy as jnp

B, L, D, H, d = 8, 256, 384, 6, 64
NEG = jnp.finfo(jnp.float32).min
key = jax.random.PRNGKey(0)
ks = jax.random.split(key, 6)
x = jax.random.normal(ks[0], (B, L, D))
wq, wk, wv = (jax.random.normal(k, (D, H, d)) * 0.05 for k in ks[1:4])
wo = jax.random.normal(ks[4], (H, d, D)) * 0.05
g = jax.random.normal(ks[5], (B, L, D))
gs = {'bmm_only': jax.random.normal(ks[5], (B * H, L, d)), 'bmm_loop_only': jax.random.normal(ks[5], (B * H, L, d))}
causal = jnp.tril(jnp.ones((L, L), bool))

def softmax(s):
    return jax.nn.softmax(s, axis=-1)

def current(x, wq, wk, wv, wo):
    q = jnp.einsum("bld,dhk->blhk", x, wq); k = jnp.einsum("bld,dhk->blhk", x, wk); v = jnp.einsum("bld,dhk->blhk", x, wv)
    q = q.reshape(B, L, H, 1, d)
    s = jnp.einsum("blkgd,bskd->bkgls", q, k, preferred_element_type=jnp.float32) * d ** -0.5
    s = jnp.where(causal[None, None, None], s, NEG)
    p = softmax(s)
    o = jnp.einsum("bkgls,bskd->blkgd", p, v).reshape(B, L, H, d)
    return jnp.einsum("blhk,hkd->bld", o, wo)

def headmajor(x, wq, wk, wv, wo):
    q = jnp.einsum("bld,dhk->bhlk", x, wq) * d ** -0.5; k = jnp.einsum("bld,dhk->bhlk", x, wk); v = jnp.einsum("bld,dhk->bhlk", x, wv)
    s = jnp.einsum("bhld,bhsd->bhls", q, k)
    s = jnp.where(causal, s, NEG)
    p = softmax(s)
    o = jnp.einsum("bhls,bhsd->bhld", p, v)
    return jnp.einsum("bhlk,hkd->bld", o, wo)

def headmajor_bias(x, wq, wk, wv, wo):
    q = jnp.einsum("bld,dhk->bhlk", x, wq) * d ** -0.5; k = jnp.einsum("bld,dhk->bhlk", x, wk); v = jnp.einsum("bld,dhk->bhlk", x, wv)
    s = jnp.einsum("bhld,bhsd->bhls", q, k) + jnp.where(causal, 0.0, -1e30)
    m = jax.lax.stop_gradient(s.max(-1, keepdims=True))
    e = jnp.exp(s - m)
    p = e * (1.0 / e.sum(-1, keepdims=True))
    o = jnp.einsum("bhls,bhsd->bhld", p, v)
    return jnp.einsum("bhlk,hkd->bld", o, wo)

def merged(x, wq, wk, wv, wo):
    q = jnp.einsum("bld,dhk->bhlk", x, wq).reshape(B * H, L, d) * d ** -0.5
    k = jnp.einsum("bld,dhk->bhlk", x, wk).reshape(B * H, L, d); v = jnp.einsum("bld,dhk->bhlk", x, wv).reshape(B * H, L, d)
    s = jnp.matmul(q, k.transpose(0, 2, 1))
    s = jnp.where(causal, s, NEG)
    p = softmax(s)
    o = jnp.matmul(p, v).reshape(B, H, L, d)
    return jnp.einsum("bhlk,hkd->bld", o, wo)

def blhd_noreshape(x, wq, wk, wv, wo):
    q = jnp.einsum("bld,dhk->blhk", x, wq) * d ** -0.5; k = jnp.einsum("bld,dhk->blhk", x, wk); v = jnp.einsum("bld,dhk->blhk", x, wv)
    s = jnp.einsum("blhd,bshd->bhls", q, k)
    s = jnp.where(causal, s, NEG)
    p = softmax(s)
    o = jnp.einsum("bhls,bshd->blhd", p, v)
    return jnp.einsum("blhk,hkd->bld", o, wo)

def projections_only(x, wq, wk, wv, wo):
    q = jnp.einsum("bld,dhk->blhk", x, wq); k = jnp.einsum("bld,dhk->blhk", x, wk); v = jnp.einsum("bld,dhk->blhk", x, wv)
    return jnp.einsum("blhk,hkd->bld", q + k + v, wo)

VARIANTS = dict(current=current, headmajor=headmajor, headmajor_bias=headmajor_bias, merged=merged,
                blhd_noreshape=blhd_noreshape, projections_only=projections_only)


def _qkv(x, wq, wk, wv):
    q = jnp.einsum("bld,dhk->bhlk", x, wq).reshape(B * H, L, d) * d ** -0.5
    k = jnp.einsum("bld,dhk->bhlk", x, wk).reshape(B * H, L, d); v = jnp.einsum("bld,dhk->bhlk", x, wv).reshape(B * H, L, d)
    return q, k, v

def merged_nosoftmax(x, wq, wk, wv, wo):
    q, k, v = _qkv(x, wq, wk, wv)
    s = jnp.matmul(q, k.transpose(0, 2, 1))
    o = jnp.matmul(s, v).reshape(B, H, L, d)
    return jnp.einsum("bhlk,hkd->bld", o, wo)

def merged_nomask(x, wq, wk, wv, wo):
    q, k, v = _qkv(x, wq, wk, wv)
    s = jnp.matmul(q, k.transpose(0, 2, 1))
    p = softmax(s)
    o = jnp.matmul(p, v).reshape(B, H, L, d)
    return jnp.einsum("bhlk,hkd->bld", o, wo)

@jax.custom_vjp
def core(q, k, v):
    return _core_fwd(q, k, v)[0]

def _core_fwd(q, k, v):
    s = jnp.matmul(q, k.transpose(0, 2, 1))
    s = jnp.where(causal, s, NEG)
    m = s.max(-1, keepdims=True)
    e = jnp.exp(s - m)
    p = e / e.sum(-1, keepdims=True)
    o = jnp.matmul(p, v)
    return o, (q, k, v, p, o)

def _core_bwd(res, do):
    q, k, v, p, o = res
    dv = jnp.matmul(p.transpose(0, 2, 1), do)
    dp = jnp.matmul(do, v.transpose(0, 2, 1))
    ds = p * (dp - jnp.sum(do * o, -1, keepdims=True))
    dq = jnp.matmul(ds, k)
    dk = jnp.matmul(ds.transpose(0, 2, 1), q)
    return dq, dk, dv

core.defvjp(_core_fwd, _core_bwd)

def merged_vjp(x, wq, wk, wv, wo):
    q, k, v = _qkv(x, wq, wk, wv)
    o = core(q, k, v).reshape(B, H, L, d)
    return jnp.einsum("bhlk,hkd->bld", o, wo)

VARIANTS.update(merged_nosoftmax=merged_nosoftmax, merged_nomask=merged_nomask, merged_vjp=merged_vjp)

def bmm_loop(a, b):
    return jnp.stack([a[i] @ b[i] for i in range(a.shape[0])])

def unrolled(x, wq, wk, wv, wo):
    q, k, v = _qkv(x, wq, wk, wv)
    s = bmm_loop(q, k.transpose(0, 2, 1))
    s = jnp.where(causal, s, NEG)
    p = softmax(s)
    o = bmm_loop(p, v).reshape(B, H, L, d)
    return jnp.einsum("bhlk,hkd->bld", o, wo)

def bmm_only(x, wq, wk, wv, wo):
    q, k, v = _qkv(x, wq, wk, wv)
    return jnp.matmul(jnp.matmul(q, k.transpose(0, 2, 1)), v)

def bmm_loop_only(x, wq, wk, wv, wo):
    q, k, v = _qkv(x, wq, wk, wv)
    return bmm_loop(bmm_loop(q, k.transpose(0, 2, 1)), v)

VARIANTS.update(unrolled=unrolled, bmm_only=bmm_only, bmm_loop_only=bmm_loop_only)

def current_qscale(x, wq, wk, wv, wo):
    q = jnp.einsum("bld,dhk->blhk", x, wq) * d ** -0.5; k = jnp.einsum("bld,dhk->blhk", x, wk); v = jnp.einsum("bld,dhk->blhk", x, wv)
    q = q.reshape(B, L, H, 1, d)
    s = jnp.einsum("blkgd,bskd->bkgls", q, k, preferred_element_type=jnp.float32)
    s = jnp.where(causal[None, None, None], s, NEG)
    p = softmax(s)
    o = jnp.einsum("bkgls,bskd->blkgd", p, v).reshape(B, L, H, d)
    return jnp.einsum("blhk,hkd->bld", o, wo)

def current_vjp(x, wq, wk, wv, wo):
    q = jnp.einsum("bld,dhk->blhk", x, wq) * d ** -0.5; k = jnp.einsum("bld,dhk->blhk", x, wk); v = jnp.einsum("bld,dhk->blhk", x, wv)
    o = blhd_core(q, k, v)
    return jnp.einsum("blhk,hkd->bld", o, wo)

@jax.custom_vjp
def blhd_core(q, k, v):
    return _blhd_fwd(q, k, v)[0]

def _blhd_fwd(q, k, v):
    s = jnp.einsum("blhd,bshd->bhls", q, k)
    s = jnp.where(causal, s, NEG)
    m = s.max(-1, keepdims=True)
    e = jnp.exp(s - m)
    p = e / e.sum(-1, keepdims=True)
    o = jnp.einsum("bhls,bshd->blhd", p, v)
    return o, (q, k, v, p, o)

def _blhd_bwd(res, do):
    q, k, v, p, o = res
    dv = jnp.einsum("bhls,blhd->bshd", p, do)
    dp = jnp.einsum("blhd,bshd->bhls", do, v)
    ds = p * (dp - jnp.einsum("blhd,blhd->bhl", do, o)[..., None])
    dq = jnp.einsum("bhls,bshd->blhd", ds, k)
    dk = jnp.einsum("bhls,blhd->bshd", ds, q)
    return dq, dk, dv

blhd_core.defvjp(_blhd_fwd, _blhd_bwd)
VARIANTS.update(current_qscale=current_qscale, current_vjp=current_vjp)

def _inner(x, wq, wk, wv, wo, c):
    q = jnp.einsum("bld,dhk->blhk", x, wq) * d ** -0.5; k = jnp.einsum("bld,dhk->blhk", x, wk); v = jnp.einsum("bld,dhk->blhk", x, wv)
    t = lambda a: a.transpose(0, 2, 1, 3).reshape(B * H, L, d)
    o = c(t(q), t(k), t(v)).reshape(B, H, L, d).transpose(0, 2, 1, 3)
    return jnp.einsum("blhk,hkd->bld", o, wo)

def _plain_core(q, k, v):
    s = jnp.matmul(q, k.transpose(0, 2, 1))
    s = jnp.where(causal, s, NEG)
    return jnp.matmul(softmax(s), v)

inner_merged = lambda *a: _inner(*a, _plain_core)
inner_merged_vjp = lambda *a: _inner(*a, core)
VARIANTS.update(inner_merged=inner_merged, inner_merged_vjp=inner_merged_vjp)

def _inner4(x, wq, wk, wv, wo):
    q = jnp.einsum("bld,dhk->blhk", x, wq); k = jnp.einsum("bld,dhk->blhk", x, wk); v = jnp.einsum("bld,dhk->blhk", x, wv)
    t = lambda a: a.transpose(0, 2, 1, 3)
    s = jnp.matmul(t(q), t(k).swapaxes(2, 3), preferred_element_type=jnp.float32) * d ** -0.5
    s = jnp.where(causal, s, NEG)
    o = jnp.matmul(softmax(s), t(v)).transpose(0, 2, 1, 3)
    return jnp.einsum("blhk,hkd->bld", o, wo)
VARIANTS.update(inner4=_inner4)

def _split_core(q, k, v, n):
    """Causal query split: query block i (of n) sees only keys 0 .. (i+1)·L/n — the fully masked blocks above
    the diagonal are never computed ((n+1)/2n of the score work)."""
    blk = L // n
    outs = []
    for i in range(n):
        S = (i + 1) * blk
        s = jnp.matmul(q[:, i * blk:S], k[:, :S].transpose(0, 2, 1))
        s = jnp.where(causal[i * blk:S, :S], s, NEG)
        outs.append(jnp.matmul(softmax(s), v[:, :S]))
    return jnp.concatenate(outs, axis=1)

VARIANTS.update({f"split{n}": (lambda n: lambda *a: _inner(*a, lambda q, k, v: _split_core(q, k, v, n)))(n)
                 for n in (2, 3, 4, 8)})

def flops(name):
    proj = 2 * B * L * D * H * d * 4
    core = 2 * 2 * B * H * L * L * d
    return 3 * (proj + (0 if name == "projections_only" else core))

ref = None
for name in sys.argv[1:] or VARIANTS:
    f = VARIANTS[name]
    step = jax.jit(jax.grad(lambda *a: jnp.vdot(f(*a), gs.get(name, g)), argnums=(0, 1, 2, 3, 4)))
    out = jax.block_until_ready(step(x, wq, wk, wv, wo))
    if name not in ("projections_only", "merged_nosoftmax", "merged_nomask", "bmm_only", "bmm_loop_only"):
        if ref is None: ref = out
        err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(out, ref))
    else:
        err = 0
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(5): out = step(x, wq, wk, wv, wo)
        jax.block_until_ready(out); times.append((time.perf_counter() - t) / 5)
    best = min(times)
    print(f"{name:18s} {best*1e3:7.1f} ms  {flops(name)/best/1e9:6.1f} GFLOP/s  max|diff| {err:.2e}", flush=True)
