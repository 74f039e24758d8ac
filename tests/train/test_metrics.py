import json

from llm_jax.train.metrics import MetricsWriter, format_duration, progress_line, read_metrics


def test_progress_line_and_durations():
    line = progress_line(50, 800, {"loss": 3.14159, "learning_rate": 1e-3, "tokens_per_sec": 12345.6, "mfu": 0.42},
                         125)
    assert line == "step  50/800 | loss 3.1416 | lr 1.00e-03 | 12,346 tok/s | MFU 42.0% | ETA 2m05s"
    assert format_duration(7384) == "2h03m" and format_duration(float("nan")) == "?"


def test_writer_appends_json_lines(tmp_path):
    for value in (1.5, float("nan")):
        writer = MetricsWriter(str(tmp_path))
        writer.write(3, {"loss": value})
        writer.close()
    records = read_metrics(str(tmp_path))
    assert records == [{"step": 3, "loss": 1.5}, {"step": 3, "loss": "nan"}]
    assert json.dumps(records)  # strictly valid JSON (no NaN literals)
