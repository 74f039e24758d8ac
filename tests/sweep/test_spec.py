import pytest

from llm_jax.sweep import Sweep, SweepError, load_sweep, members
from llm_jax.sweep.spec import member_config, train_args


def test_members_cross_variants_grid_and_seeds():
    sweep = Sweep(name="s", base="configs/tiny.py", variants={"a": {"model.norm": "rmsnorm"}, "b": {}},
                  grid={"train.lr": [1e-3, 1e-2]}, overrides={"train.steps": 5}, seeds=[0, 1])
    got = members(sweep)
    assert len(got) == 8 and len({m.name for m in got}) == 8
    first = got[0]
    assert first.name == "a,lr=0.001-seed0" and first.meta == {"train.lr": 1e-3, "group": "a"}
    assert first.overrides == {"train.steps": 5, "model.norm": "rmsnorm", "train.lr": 1e-3, "train.seed": 0}
    args = train_args(sweep, first)
    assert args[:5] == ["train", "--config", "configs/tiny.py", "--workdir", "runs/sweeps/s/a,lr=0.001-seed0"]
    assert "--config.train.lr=0.001" in args and "--config.train.seed=0" in args


def test_a_bad_override_names_the_member_and_the_key():
    sweep = Sweep(name="s", base="configs/tiny.py", variants={"bad": {"model.n_heads": 3}})
    with pytest.raises(SweepError, match="member bad-seed0.*n_heads"):
        member_config(sweep, members(sweep)[0])


def test_load_sweep_rejects_files_without_get_sweep(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("X = 1\n")
    with pytest.raises(SweepError, match="get_sweep"):
        load_sweep(str(path))
    with pytest.raises(SweepError, match="no such sweep file"):
        load_sweep(str(tmp_path / "missing.py"))


def test_every_committed_sweep_file_loads_and_validates():
    import glob
    files = [path for path in sorted(glob.glob("experiments/**/*.py", recursive=True))
             if "def get_sweep" in open(path).read()]  # the rest are helper scripts (task makers, tables)
    assert len(files) >= 8
    for path in files:
        sweep, _ = load_sweep(path)
        for member in members(sweep):
            member_config(sweep, member)
