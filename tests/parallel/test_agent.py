"""The supervising parent of multi-process training (agent.py), without JAX: what it shows of the worker's
stderr, and how it turns a worker aborted by JAX's distributed runtime into the project's line and status 76."""

import io
import sys

from llm_jax.parallel import agent

FATAL = ("F1130 12:00:53.510564    5361 client.h:80] Terminating process because the JAX distributed service "
         "detected fatal errors. This most likely indicates that another task died. absl::Status: UNAVAILABLE: "
         "Failed to send RPC to coordination service.\n")
RUNTIME_LINES = [
    "E1130 12:00:53.510482    5361 coordination_service_agent.cc:289] Polled an error from coordination service\n",
    "Additional GRPC error information from remote target coordination_service while calling /x/PollForError:\n",
    ":UNKNOWN:Error received from peer  {grpc_status:14}\n",
]


def test_the_runtimes_cxx_report_is_held_back_and_ordinary_lines_pass():
    out = io.StringIO()
    shown = agent._StderrFilter(out, show_all=False)
    for line in ["step 5/10 | loss 4.2\n", *RUNTIME_LINES, "W1130 12:00:53.1 123 spmd_partitioner.cc:656] slow\n",
                 FATAL, "*** Check failure stack trace: ***\n", "    @     0x7f318e2eb505  (unknown)\n"]:
        shown.line(line)
    assert out.getvalue() == "step 5/10 | loss 4.2\nW1130 12:00:53.1 123 spmd_partitioner.cc:656] slow\n"
    assert shown.fatal.startswith("UNAVAILABLE: Failed to send RPC")


def test_should_supervise_only_a_multi_process_launch():
    assert not agent.should_supervise({})
    multi = {"LLM_JAX_COORDINATOR": "127.0.0.1:1", "LLM_JAX_NUM_PROCESSES": "2"}
    assert agent.should_supervise(multi)
    assert not agent.should_supervise({**multi, agent.WORKER_ENV: "1"})  # the worker itself
    assert not agent.should_supervise({**multi, "LLM_JAX_SUPERVISE": "0"})


def test_an_aborted_worker_becomes_one_line_and_status_76(tmp_path, capfd):
    """A stand-in worker prints a line, JAX's fatal report, and aborts (SIGABRT) as the C++ runtime does."""
    worker = tmp_path / "worker.py"
    worker.write_text("import os, sys\nprint('step 1', flush=True)\n"
                      f"sys.stderr.write({''.join(RUNTIME_LINES) + FATAL!r}); sys.stderr.flush()\nos.abort()\n")
    assert agent.supervise(["train"], command=[sys.executable, str(worker)]) == 76
    out, err = capfd.readouterr()
    assert out == "step 1\n"
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: lost contact with another process of this "
                                                                 "run"), err


def test_a_worker_status_passes_through_and_a_signal_death_is_128_plus_it(tmp_path, capfd):
    worker = tmp_path / "worker.py"
    worker.write_text("import os, signal, sys\nif sys.argv[1] == 'kill': os.kill(os.getpid(), signal.SIGKILL)\n"
                      "sys.exit(int(sys.argv[1]))\n")
    assert agent.supervise(["75"], command=[sys.executable, str(worker)]) == 75
    assert agent.supervise(["kill"], command=[sys.executable, str(worker)]) == 137
    assert capfd.readouterr().err.strip().splitlines()[-1] == "error: the training process was killed by SIGKILL"
