"""Sweeps: declared in `experiments/**.py`, run as separate training processes, reported as tables and plots."""

from llm_jax.sweep.spec import Member, Sweep, SweepError, load_sweep, members  # noqa: F401
