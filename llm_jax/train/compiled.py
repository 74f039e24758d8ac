"""The real train step, lowered and compiled without data: XLA's own memory and FLOP counts for a config.

`llm-jax estimate --compile` reports these beside the analytic estimates, and the tests hold the analytic
FLOPs per token (`llm_jax.models.accounting`) to within 10% of `cost_analysis()`.
"""

from __future__ import annotations

import jax

from llm_jax.config import ConfigError
from llm_jax.train.trainable import build_trainable


def compile_train_step(cfg, devices: int | None = None):
    """The compiled step of `cfg` on this machine's devices (which must number `devices`, if given)."""
    if devices is not None and jax.device_count() != devices:
        raise ConfigError(f"--compile needs the {devices} devices being estimated; this machine has "
                          f"{jax.device_count()} (on CPU: XLA_FLAGS=--xla_force_host_platform_device_count={devices})")
    return build_trainable(cfg).compile_train_step()


def memory(compiled) -> dict:
    """memory_analysis() per device."""
    analysis = compiled.memory_analysis()
    return {"argument_bytes": analysis.argument_size_in_bytes, "output_bytes": analysis.output_size_in_bytes,
            "temp_bytes": analysis.temp_size_in_bytes, "alias_bytes": analysis.alias_size_in_bytes,
            "generated_code_bytes": analysis.generated_code_size_in_bytes}


def flops_per_token(compiled, cfg) -> float:
    """cost_analysis() FLOPs of one step (summed over devices) per trained token.

    XLA counts a while loop's body once, so a layer scan must be unrolled (model.scan_unroll = n_layers) for
    this to cover every layer."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) * jax.device_count() / (cfg.train.batch_size * cfg.model.seq_len)
