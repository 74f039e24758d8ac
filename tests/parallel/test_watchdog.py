"""The heartbeat watchdog's verdicts, on a fake key-value store (no JAX): which status a process ends with when a
peer stops beating or posts its own end."""

import pytest

from llm_jax.errors import EXIT_PEER_LOST
from llm_jax.parallel import distributed


class FakeStore:
    def __init__(self):
        self.kv = {}

    def key_value_set(self, key, value, allow_overwrite=False):
        self.kv[key] = value

    def key_value_dir_get(self, prefix):
        return [(k, v) for k, v in sorted(self.kv.items()) if k.startswith(prefix)]

    def key_value_try_get(self, key):
        if key not in self.kv:
            raise RuntimeError(f"NOT_FOUND: {key}")
        return self.kv[key]


class Ended(Exception):
    pass


@pytest.fixture
def watchdog(monkeypatch):
    def exit_(status):
        raise Ended(status)
    monkeypatch.setattr(distributed.os, "_exit", exit_)
    monkeypatch.setattr(distributed.time, "sleep", lambda s: None)
    return distributed.Watchdog(FakeStore(), index=0, count=3, bound=10.0)


def judge(dog, now):
    exits = dict(dog.client.key_value_dir_get("llm_jax/exit/"))
    beats = dict(dog.client.key_value_dir_get("llm_jax/beat/"))
    dog._judge_exits(exits, now)
    dog._judge_beats(beats, now)


def ended_with(dog, now) -> int | None:
    try:
        judge(dog, now)
    except Ended as e:
        return e.args[0]
    return None


def test_a_silent_peer_ends_the_run_with_76_after_the_bound(watchdog, capsys):
    store = watchdog.client
    store.kv.update({"llm_jax/beat/1": "1", "llm_jax/beat/2": "1"})
    assert ended_with(watchdog, 0.0) is None
    store.kv["llm_jax/beat/1"] = "2"  # process 1 beats on, process 2 is silent
    assert ended_with(watchdog, 9.0) is None
    assert ended_with(watchdog, 10.5) == EXIT_PEER_LOST
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: lost another process of this run: process 2 sent no heartbeat for 10 s")
    assert store.kv["llm_jax/exit/0"].startswith("76 ")  # the others are told why


@pytest.mark.parametrize("posted, expected", [("2 error: bad config", 2), ("3 halted", 3), ("74 disk full", 74),
                                              ("1 a bug", 1), ("76 lost process 2", EXIT_PEER_LOST)])
def test_a_peer_that_stops_with_an_error_stops_the_others_with_the_same_status(watchdog, capsys, posted, expected):
    watchdog.client.kv["llm_jax/exit/1"] = posted
    assert ended_with(watchdog, 0.0) == expected  # a repeatable failure is not turned into "requeue me" (76)
    assert f"process 1 stopped with status {posted.split()[0]}" in capsys.readouterr().err


def test_a_finished_or_preempted_peer_is_not_a_failure(watchdog):
    store = watchdog.client
    store.kv.update({"llm_jax/exit/1": "0", "llm_jax/exit/2": "75 SIGTERM received"})
    assert ended_with(watchdog, 0.0) is None
    assert ended_with(watchdog, 9.0) is None  # this process is expected to be preempted at the same step
    assert ended_with(watchdog, 10.5) == EXIT_PEER_LOST  # ... but it was not, within the bound


def test_a_process_that_ends_itself_does_not_report_a_lost_peer(watchdog):
    watchdog.stop(0)
    assert watchdog.client.kv["llm_jax/exit/0"] == "0"
    watchdog.client.kv["llm_jax/exit/1"] = "2 error"
    assert ended_with(watchdog, 0.0) is None  # stopped: no second verdict, no second line
