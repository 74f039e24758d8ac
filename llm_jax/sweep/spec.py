"""Sweep files: `experiments/**/NAME.py` with `get_sweep()` returning a `Sweep` — a base config, the variants
(named override sets, and/or a grid of keys), and seeds. Each (variant, seed) is a member: one training run
in its own work directory, launched as `llm-jax train --config BASE --workdir DIR --config.KEY=VALUE ...`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os

from llm_jax.config import ConfigError, load_config
from llm_jax.errors import UserError


@dataclasses.dataclass
class Sweep:
    name: str
    base: str                                   # a config file, relative to the repository root or absolute
    variants: dict[str, dict] = dataclasses.field(default_factory=lambda: {"base": {}})
    grid: dict[str, list] = dataclasses.field(default_factory=dict)   # crossed with every variant
    overrides: dict = dataclasses.field(default_factory=dict)          # applied to every member
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    meta: dict[str, dict] = dataclasses.field(default_factory=dict)    # per variant: reported, not trained on
    description: str = ""
    results_dir: str = ""                       # "" = results/NAME beside the sweep file
    runs_dir: str = ""                          # "" = runs/sweeps/NAME


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    variant: str
    seed: int
    overrides: dict
    meta: dict


class SweepError(UserError):
    """A sweep file that cannot be run; the message names the file and the problem."""


def _grid_variants(variants: dict[str, dict], grid: dict[str, list]) -> list[tuple[str, str, dict]]:
    """(member variant name, declared variant name, overrides) for every variant crossed with the grid."""
    if not grid:
        return [(name, name, overrides) for name, overrides in variants.items()]
    keys = sorted(grid)
    out = []
    for name, overrides in variants.items():
        for values in itertools.product(*(grid[k] for k in keys)):
            label = ",".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values))
            full = label if name == "base" and len(variants) == 1 else f"{name},{label}"
            out.append((full, name, {**overrides, **dict(zip(keys, values))}))
    return out


def members(sweep: Sweep) -> list[Member]:
    out = []
    for variant, declared, overrides in _grid_variants(sweep.variants, sweep.grid):
        for seed in sweep.seeds:
            merged = {**sweep.overrides, **overrides, "train.seed": seed}
            meta = dict(sweep.meta.get(variant) or sweep.meta.get(declared) or {})
            if sweep.grid:   # the grid values become columns (e.g. train.lr), for plots against them
                meta.update({k: overrides[k] for k in sweep.grid}, group=declared)
            out.append(Member(f"{variant}-seed{seed}", variant, seed, merged, meta))
    return out


def load_sweep(path: str) -> tuple[Sweep, str]:
    """The sweep of a sweep file, and the repository root its relative paths are taken from (the cwd)."""
    if not os.path.isfile(path):
        raise SweepError(f"{path}: no such sweep file")
    spec = importlib.util.spec_from_file_location("llm_jax_sweep_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise SweepError(f"{path}: a sweep file defines get_sweep() returning llm_jax.sweep.Sweep")
    sweep = module.get_sweep()
    if not isinstance(sweep, Sweep):
        raise SweepError(f"{path}: get_sweep() returned {type(sweep).__name__}, not llm_jax.sweep.Sweep")
    if not sweep.results_dir:
        sweep.results_dir = os.path.join(os.path.dirname(os.path.abspath(path)), "results", sweep.name)
    return sweep, path


def member_config(sweep: Sweep, member: Member):
    """The resolved, validated config of a member: every override is checked before anything runs."""
    overrides = {k: str(v) for k, v in member.overrides.items()}
    try:
        return load_config(sweep.base, overrides)
    except ConfigError as e:
        raise SweepError(f"sweep {sweep.name}, member {member.name}: {e}") from None


def runs_root(sweep: Sweep) -> str:
    return sweep.runs_dir or os.path.join("runs", "sweeps", sweep.name)


def workdir(sweep: Sweep, member: Member) -> str:
    return os.path.join(runs_root(sweep), member.name)


def train_args(sweep: Sweep, member: Member) -> list[str]:
    args = ["train", "--config", sweep.base, "--workdir", workdir(sweep, member)]
    return args + [f"--config.{k}={v}" for k, v in member.overrides.items()]
