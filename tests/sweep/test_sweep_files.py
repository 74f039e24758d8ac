"""A sweep's files: appended logs survive a torn last line, records and reports are written atomically."""

import errno
import json
import os

import pytest

from llm_jax import fileio
from llm_jax.errors import StorageError
from llm_jax.fileio import append_jsonl
from llm_jax.sweep import Sweep
from llm_jax.sweep import report as report_lib
from llm_jax.sweep.runner import DONE_FILE, is_done, read_jsonl
from llm_jax.sweep.spec import SweepError, members


def test_a_torn_last_line_is_skipped_and_a_record_appended_to_it_is_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert read_jsonl(str(path)) == []  # not written yet
    path.write_text('{"step": 1}\n{"step": 2, "lo')
    assert read_jsonl(str(path)) == [{"step": 1}]
    with open(path, "a") as f:  # a writer that resumed without ending the torn line
        f.write('{"step": 3, "loss": {"x": 1}}\n{"step": 4}\n')
    assert read_jsonl(str(path)) == [{"step": 1}, {"step": 3, "loss": {"x": 1}}, {"step": 4}]


def test_a_damaged_line_inside_the_file_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "attempts.jsonl"
    path.write_bytes(b'{"returncode": 0}\n\x00\x00\x00garbage\n{"returncode": 1}\n')
    with pytest.raises(SweepError, match=rf"{path}, line 2: not a JSON object"):
        read_jsonl(str(path))


def test_append_drops_a_torn_last_line_first(tmp_path):
    path = tmp_path / "attempts.jsonl"
    path.write_text('{"returncode": 0}\n{"returnc')
    append_jsonl(str(path), {"returncode": 75})
    assert path.read_text() == '{"returncode": 0}\n{"returncode": 75}\n'
    append_jsonl(str(tmp_path / "new.jsonl"), {"a": 1})
    assert read_jsonl(str(tmp_path / "new.jsonl")) == [{"a": 1}]


def _sweep(tmp_path) -> Sweep:
    return Sweep(name="f", base="configs/tiny.py", variants={"a": {}}, runs_dir=str(tmp_path / "runs"),
                 results_dir=str(tmp_path / "results"))


def test_a_damaged_member_record_counts_as_unfinished(tmp_path):
    sweep = _sweep(tmp_path)
    member = members(sweep)[0]
    wd = tmp_path / "runs" / member.name
    wd.mkdir(parents=True)
    assert not is_done(sweep, member)
    (wd / DONE_FILE).write_text('{"member": "a-se')  # torn by a crash before writes were atomic
    assert not is_done(sweep, member)
    (wd / DONE_FILE).write_text('{"member": "a-seed0"}')
    assert is_done(sweep, member)


class _FailingWrites:
    """fileio's `open`, with every write of a temporary file failing half-way, as on a full disk."""

    def __init__(self, real_open):
        self.real_open = real_open

    def __call__(self, path, mode="r", *args, **kwargs):
        f = self.real_open(path, mode, *args, **kwargs)
        if "w" in mode:
            write = f.write

            def half(data):
                write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = half
        return f


def test_a_report_write_that_fails_leaves_the_previous_files_and_no_temporaries(tmp_path, monkeypatch):
    out = tmp_path / "results"
    out.mkdir()
    csv_path, png_path = out / "members.csv", out / "loss_curves.png"
    report_lib._write_csv(str(csv_path), [{"member": "a", "variant": "a"}], ("member", "variant"))
    png_path.write_bytes(b"old png")
    before = csv_path.read_bytes()
    monkeypatch.setattr(fileio, "open", _FailingWrites(open), raising=False)
    with pytest.raises(StorageError, match=f"cannot write {csv_path}: No space left on device"):
        report_lib._write_csv(str(csv_path), [{"member": "b", "variant": "b"}] * 100, ("member", "variant"))
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="plot failed"):
        with report_lib.atomic_png(str(png_path)) as tmp:
            open(tmp, "wb").write(b"half a png")
            raise RuntimeError("plot failed")
    assert csv_path.read_bytes() == before and png_path.read_bytes() == b"old png"
    assert sorted(os.listdir(out)) == ["loss_curves.png", "members.csv"]


def test_a_plot_is_published_only_when_complete(tmp_path):
    path = tmp_path / "grid.png"
    rows = [{"group": "g", "lr": lr, "final_eval_loss": loss} for lr, loss in ((1e-3, 4.0), (3e-3, 3.5))]
    report_lib._plot_grid(rows, "lr", str(path), "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.listdir(tmp_path) == ["grid.png"]


def test_unfinished_members_are_reported_even_with_a_missing_or_binary_log(tmp_path):
    sweep = _sweep(tmp_path)
    wd = tmp_path / "runs" / members(sweep)[0].name
    wd.mkdir(parents=True)
    (wd / "attempts.jsonl").write_text(json.dumps({"returncode": 1, "wall_seconds": 3}) + "\n")
    assert "exit status 1 after 1 attempt(s): \n" in report_lib._unfinished(sweep)
    (wd / "train.log").write_bytes(b"step 1\n\xff\xfe error: disk on fire\n")
    assert "error: disk on fire" in report_lib._unfinished(sweep)


def test_a_report_of_finished_members_with_torn_logs_writes_every_file_whole(tmp_path):
    sweep = _sweep(tmp_path)
    sweep.variants = {"a": {}, "b": {"model.norm": "rmsnorm"}}
    for i, member in enumerate(members(sweep)):
        wd = tmp_path / "runs" / member.name
        wd.mkdir(parents=True)
        (wd / DONE_FILE).write_text(json.dumps({"member": member.name}))
        (wd / "attempts.jsonl").write_text('{"returncode": 0, "wall_seconds": 5}\n{"returncode"')
        (wd / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "tokens_seen": 1000 * s, "eval_loss": 5.0 - s / 10 - i, "tokens_per_sec": 99})
            + "\n" for s in (0, 5, 10)) + '{"step": 15, "tokens_se')
    append_jsonl(str(tmp_path / "runs" / "sweep_runs.jsonl"), {"wall_seconds": 12, "parallel": 2})
    result = report_lib.report(sweep, "sweep.py", log=lambda _: None)
    out = tmp_path / "results"
    assert result["finished"] == 2
    assert sorted(os.listdir(out)) == ["README.md", "curves.csv", "loss_curves.png", "members.csv"]
    table = (out / "members.csv").read_text().splitlines()
    assert len(table) == 3 and table[1].startswith("a-seed0,a,0,")
    assert len((out / "curves.csv").read_text().splitlines()) == 1 + 2 * 2  # tokens > 0 only
    assert "| b |" in (out / "README.md").read_text()
