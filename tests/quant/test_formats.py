"""The storage formats against references computed here in numpy: int8 per-channel absmax, int4 group-wise
min-max round-to-nearest, NF4 (its table against the published constants), and the 4-bit packing."""

import numpy as np
import pytest

from llm_jax.models import quant_formats as formats
from llm_jax.quant.command import METHODS as COMMAND_METHODS

# bitsandbytes' NF4 table (bitsandbytes/functional.py, the QLoRA paper's appendix), typed in from the source
PUBLISHED_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                 -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                 0.7229568362236023, 1.0]


def _weights(shape, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, shape).astype(np.float32)
    w[:, 0] *= 10  # an outlier channel
    return w


def test_the_nf4_table_is_the_published_one():
    np.testing.assert_allclose(formats.NF4_LEVELS, np.float32(PUBLISHED_NF4), rtol=0, atol=2e-7)
    assert formats.NF4_LEVELS[7] == 0.0 and formats.NF4_LEVELS[0] == -1.0 and formats.NF4_LEVELS[-1] == 1.0


def test_the_command_offers_every_format_and_gptq():
    assert COMMAND_METHODS == formats.METHODS + ("gptq",)


def test_int8_is_per_channel_absmax_within_half_a_step():
    w = _weights((96, 40))
    parts = formats.quantize("int8", w)
    scale_ref = np.abs(w).max(axis=0) / 127
    q_ref = np.clip(np.round(w / scale_ref), -127, 127)
    np.testing.assert_allclose(np.asarray(parts["scale"]), scale_ref, rtol=1e-6)
    assert np.mean(np.asarray(parts["q"]) == q_ref) > 0.999  # float32 vs float64 may differ on a tie
    back = np.asarray(formats.dequantize("int8", parts))
    assert np.all(np.abs(back - w) <= scale_ref / 2 * (1 + 1e-5))
    assert parts["q"].dtype == np.int8 and np.abs(np.asarray(parts["q"])).max() == 127


def test_int4_is_groupwise_min_max_within_half_a_step():
    w, group = _weights((128, 24)), 32
    parts = formats.quantize("int4", w, group)
    wg = w.reshape(4, group, 24)
    lo, hi = wg.min(axis=1), wg.max(axis=1)
    scale_ref = (hi - lo) / 15
    np.testing.assert_allclose(np.asarray(parts["scale"]), scale_ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(parts["offset"]), lo, rtol=0, atol=0)
    back = np.asarray(formats.dequantize("int4", parts)).reshape(4, group, 24)
    assert np.all(np.abs(back - wg) <= scale_ref[:, None] / 2 * (1 + 1e-4) + 1e-7)
    codes = np.asarray(formats.unpack_int4(parts["q"]))
    assert codes.max() == 15 and codes.min() == 0 and parts["q"].shape == (64, 24)


def test_nf4_picks_the_nearest_level_of_each_group():
    w, group = _weights((128, 16)), 64
    parts = formats.quantize("nf4", w, group)
    wg = w.reshape(2, group, 16)
    absmax = np.abs(wg).max(axis=1)
    nearest = np.argmin(np.abs(wg[..., None] / absmax[:, None, :, None] - np.float32(PUBLISHED_NF4)), axis=-1)
    codes = np.asarray(formats.unpack_int4(parts["q"])).reshape(2, group, 16)
    assert np.mean(codes == nearest) > 0.999
    back = np.asarray(formats.dequantize("nf4", parts)).reshape(2, group, 16)
    np.testing.assert_allclose(back, np.float32(PUBLISHED_NF4)[nearest] * absmax[:, None], rtol=1e-5, atol=1e-7)
    assert np.all(np.abs(back - wg) <= absmax[:, None] * np.max(np.diff(PUBLISHED_NF4)) / 2 * (1 + 1e-5))


def test_int4_packing_round_trips_two_codes_per_byte():
    codes = np.random.default_rng(1).integers(0, 16, (10, 3, 5)).astype(np.uint8)
    packed = np.asarray(formats.pack_int4(codes))
    assert packed.shape == (5, 3, 5) and packed.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(formats.unpack_int4(packed)), codes)
    assert int(formats.pack_int4(np.array([1, 2], np.uint8))[0]) == 0x21  # input 0 low nibble, input 1 high


@pytest.mark.parametrize("method", formats.METHODS)
def test_part_shapes_match_what_quantize_returns(method):
    w = _weights((64, 6))
    parts = formats.quantize(method, w.reshape(64, 2, 3), 16)
    shapes = formats.part_shapes(method, 64, (2, 3), 16)
    assert {k: (v.shape, v.dtype) for k, v in parts.items()} == {k: (s, np.dtype(d)) for k, (s, d) in shapes.items()}
    assert tuple(formats.PARTS[method]) == tuple(shapes)


def test_zero_and_constant_channels_are_reproduced():
    w = np.zeros((64, 4), np.float32)
    w[:, 1] = 0.25
    for method in formats.METHODS:
        back = np.asarray(formats.dequantize(method, formats.quantize(method, w, 32)))
        np.testing.assert_allclose(back, w, rtol=1e-6, atol=0)
