"""The sandbox contains hostile programs: deleting files, fork bombs, endless loops, sockets, 10 GB allocations and
huge files all end as failures in bounded time, with the canary files, the parent directory, the network and the
process table untouched. Each runs under both layer sets: namespaces (skipped where `unshare` does not work) and
the guard-only fallback; the namespace runs also try to get around the guard (ctypes, `import posix`, re-importing
_socket), to show the OS layer: no remount, no host Unix socket, no process outliving the run, also as non-root."""

import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from llm_jax.errors import UserError
from llm_jax.eval import sandbox

TIMEOUT = 2.0


def _kinds():
    kinds = []
    for kind in ("namespaces", "guard"):
        try:
            sandbox.sandbox_info(kind)
            kinds.append(kind)
        except UserError:
            kinds.append(pytest.param(kind, marks=pytest.mark.skip(reason=f"no {kind} isolation here")))
    return kinds


@pytest.fixture(params=_kinds())
def kind(request):
    return request.param


@pytest.fixture
def roots(tmp_path):
    """(a canary directory holding canary.txt, the sandboxes' parent directory): both must come through."""
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "canary.txt").write_text("still here")
    os.chmod(canary, 0o777)  # permissions alone would not protect it
    os.chmod(canary / "canary.txt", 0o666)
    parent = tmp_path / "sandboxes"
    parent.mkdir()
    return canary, parent


def _run(source, kind, parent, timeout=TIMEOUT, **limits):
    start = time.monotonic()
    result = sandbox.run_program(source, timeout_s=timeout, isolation=kind, tmp_root=str(parent), **limits)
    elapsed = time.monotonic() - start
    assert elapsed < timeout + 5, f"took {elapsed:.1f} s"
    assert not result.passed and result.status != "passed", result
    assert list(parent.iterdir()) == [], "the sandbox's directory was left behind"
    return result


LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
HAS_NAMESPACES = "namespaces" in [k for k in _kinds() if isinstance(k, str)]
needs_namespaces = pytest.mark.skipif(not HAS_NAMESPACES, reason="no namespaces here")


@pytest.fixture
def outside():
    """A directory outside the sandbox that anyone may write (/var/tmp is on the root file system here)."""
    path = tempfile.mkdtemp(prefix="llm_jax_sandbox_outside_", dir="/var/tmp")
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _remount_and_write(outside):
    """Remount / and the interpreter's directory read-write (MS_REMOUNT | MS_BIND), then write outside."""
    return LIBC + (f"import os, sys\nout = []\nfor path in (b'/', os.path.dirname(sys.executable).encode()):\n"
                   f"    out.append(libc.mount(b'none', path, None, 32 | 4096, None) == 0)\ntry:\n"
                   f"    open({outside!r} + '/pwned', 'w').write('x')\n    out.append('wrote')\nexcept OSError:\n"
                   f"    pass\nraise SystemExit(f'remounted, wrote: {{out}}')")


def test_a_plain_program_passes_and_a_failing_one_fails(kind):
    assert sandbox.run_program("assert sum(range(4)) == 6", isolation=kind) == sandbox.Result(True, "passed", "")
    r = sandbox.run_program("def f():\n    raise ValueError('bad')\nf()", isolation=kind)
    assert (r.passed, r.status, r.detail) == (False, "failed", "ValueError: bad")
    assert sandbox.run_program("import sys\nsys.exit(0)", isolation=kind).status == "failed"
    r = sandbox.run_program("import os\nos._exit(0)", isolation=kind)  # no report from the runner: not a pass
    assert r.status == "failed" and "before finishing" in r.detail


def test_deleting_files_is_contained(kind, roots):
    canary, parent = roots
    target = canary / "canary.txt"
    for source in [f"import os\nos.remove({str(target)!r})", f"import shutil\nshutil.rmtree({str(canary)!r})",
                   f"import pathlib\npathlib.Path({str(target)!r}).unlink()",
                   "import os\nos.system('rm -rf /tmp/*')"]:
        _run(source, kind, parent)
    if kind == "namespaces":  # around the guard: the file system itself refuses
        r = _run(LIBC + f"assert libc.unlink({str(target).encode()!r}) == 0, ctypes.get_errno()", kind, parent)
        assert r.status == "failed"
    assert target.read_text() == "still here"
    assert sorted(p.name for p in canary.parent.iterdir()) == ["canary", "sandboxes"]


@needs_namespaces
def test_nothing_is_written_outside_the_work_directory(roots):
    canary, parent = roots
    stamp = f"llm_jax_sandbox_test_{os.getpid()}_{time.time_ns()}"
    targets = [str(canary / "new.txt"), f"/var/tmp/{stamp}", os.path.expanduser(f"~/{stamp}"), f"../{stamp}"]
    source = (f"wrote = []\nfor path in {targets!r}:\n    try:\n        with open(path, 'w') as f:\n"
              f"            f.write('x')\n        wrote.append(path)\n    except OSError:\n        pass\n"
              f"open('inside.txt', 'w').write('fine')\nraise SystemExit(f'wrote {{wrote}}')")
    try:
        _run(source, "namespaces", parent)
        assert sorted(os.listdir(canary)) == ["canary.txt"]
        assert not os.path.exists(f"/var/tmp/{stamp}") and not os.path.exists(os.path.expanduser(f"~/{stamp}"))
        assert sorted(os.listdir(parent.parent)) == ["canary", "sandboxes"]
    finally:
        for path in (f"/var/tmp/{stamp}", os.path.expanduser(f"~/{stamp}")):
            if os.path.exists(path):
                os.remove(path)


def _processes(marker: bytes) -> int:
    """Processes whose command line holds `marker`."""
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                n += marker in f.read()
        except OSError:
            pass
    return n


def _sandboxed() -> int:
    """Processes running the sandbox's runner (its code is on their command line)."""
    return _processes(b"def _guard(strict)")


@needs_namespaces
def test_the_mounts_cannot_be_remounted(roots, outside):
    r = _run(_remount_and_write(outside), "namespaces", roots[1])
    assert r.detail == "SystemExit: remounted, wrote: [False, False]" and os.listdir(outside) == []


@needs_namespaces
def test_not_as_root_the_mounts_cannot_be_remounted(outside):
    """User-namespace mode, where the program is root in its namespace: run the sandbox as uid 65534."""
    setpriv, repo = shutil.which("setpriv"), os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))))
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("needs root and util-linux's setpriv to run the sandbox as uid 65534 (not as root, the other "
                    "tests already run in user-namespace mode)")
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    run = dict(text=True, capture_output=True, cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin")}, timeout=60)
    start = "import os, sys\nsys.path.insert(0, sys.argv[1])\nos.stat(os.path.realpath(sys.executable))\n" \
            "from llm_jax.eval import sandbox\n"
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3", shutil.which("python3") or sys.executable]):
        proc = subprocess.run([*as_nobody, python, "-I", "-c", start, repo], **run)
        if proc.returncode == 0:  # else this interpreter or the repository is out of uid 65534's reach
            break
    else:
        pytest.skip(f"uid 65534 can run no Python with llm_jax here: {proc.stderr.strip()[-300:]}")
    script = start + ("print(sandbox.sandbox_info('namespaces'))\n"
                      "print(tuple(sandbox.run_program(sys.stdin.read(), timeout_s=10, isolation='namespaces')))")
    proc = subprocess.run([*as_nobody, python, "-I", "-c", script, repo], input=_remount_and_write(outside), **run)
    if "no isolation of kind" in proc.stderr:
        pytest.skip(f"namespaces do not work for uid 65534 here: {proc.stderr.strip()[-300:]}")
    info, result = proc.stdout.strip().splitlines()[-2:]
    assert "unshare --user" in info
    assert result == "(False, 'failed', 'SystemExit: remounted, wrote: [False, False]')"
    assert os.listdir(outside) == []


@needs_namespaces
def test_host_unix_sockets_are_unreachable(roots, outside):
    """A world-writable socket on the (read-only) host file system, and an abstract one: the program re-imports
    _socket around the guard and cannot connect to either."""
    _, parent = roots
    path, abstract = os.path.join(outside, "socket"), f"\0llm_jax_sandbox_test_{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as on_disk, socket.socket(socket.AF_UNIX) as in_net:
        on_disk.bind(path)
        os.chmod(path, 0o777)
        in_net.bind(abstract)
        for listener in (on_disk, in_net):
            listener.listen(8)
            listener.setblocking(False)
        source = (f"import sys\ndel sys.modules['socket'], sys.modules['_socket']\nimport _socket\nout = []\n"
                  f"for address in ({path!r}, {abstract!r}):\n    s = _socket.socket(_socket.AF_UNIX)\n    try:\n"
                  f"        s.connect(address)\n        s.send(b'hi')\n        out.append(address)\n"
                  f"    except OSError as e:\n        out.append(e.errno)\nraise SystemExit(f'connected: {{out}}')")
        r = _run(source, "namespaces", parent)
        assert r.detail == f"SystemExit: connected: [{errno.ENOENT}, {errno.ECONNREFUSED}]", r  # no such path
        time.sleep(0.2)
        for listener in (on_disk, in_net):
            with pytest.raises(BlockingIOError):
                listener.accept()  # nothing connected


@needs_namespaces
def test_a_setsid_child_does_not_outlive_the_run(roots):
    """Around the guard (`import posix`), a child in a session of its own runs `sleep`: gone when the program ends
    or times out."""
    _, parent = roots
    for i, tail in enumerate(["", "time.sleep(60)"]):
        seconds = f"60.{os.getpid()}{i}{time.time_ns() % 10**6}"  # marks this test's sleep
        child = (f"import posix, shutil, time\nif posix.fork() == 0:\n    posix.setsid()\n"
                 f"    posix.execv(shutil.which('sleep'), ['sleep', {seconds!r}])\ntime.sleep(0.5)\n{tail}")
        r = sandbox.run_program(child, timeout_s=TIMEOUT, isolation="namespaces", tmp_root=str(parent))
        assert r.status == ("passed", "timeout")[i], r
        assert _processes(b"sleep\0" + seconds.encode()) == 0


def test_a_fork_bomb_is_contained(kind, roots):
    _, parent = roots
    before = _sandboxed()
    r = _run("import os\nwhile True:\n    os.fork()", kind, parent)
    assert "os.fork is disabled" in r.detail
    _run("import subprocess\nsubprocess.Popen(['sh', '-c', ':(){ :|:& };:'])", kind, parent)
    _run("import multiprocessing\nwhile True:\n    multiprocessing.Process(target=print).start()", kind, parent)
    if kind == "namespaces":  # around the guard: the process limit, then the timeout kills the whole namespace
        r = _run(LIBC + "while True:\n    libc.fork()", kind, parent)
        assert r.status in ("timeout", "killed"), r
    assert _sandboxed() <= before  # nothing left behind


def test_an_endless_loop_times_out(kind, roots):
    _, parent = roots
    assert _run("while True:\n    pass", kind, parent).status == "timeout"
    assert _run("import time\ntime.sleep(1000)", kind, parent).status == "timeout"
    r = _run("while True:\n    pass", kind, parent, timeout=30, cpu_s=1)  # the CPU limit ends it first
    assert r.status == "timeout" and "CPU" in r.detail


def test_a_socket_reaches_nothing(kind, roots):
    _, parent = roots
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        _run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')", kind,
             parent)
        _run(f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=1)", kind, parent)
        if kind == "namespaces":  # around the guard: the network namespace has nowhere to go
            addr = "struct.pack('=H', 2) + struct.pack('!H', %d) + bytes([127, 0, 0, 1]) + bytes(8)" % port
            r = _run(LIBC + f"import struct\nfd = libc.socket(2, 1, 0)\nassert fd >= 0, 'no socket'\n"
                     f"assert libc.connect(fd, {addr}, 16) == 0, ctypes.get_errno()", kind, parent)
            assert r.status == "failed"
        time.sleep(0.2)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected


def test_ten_gigabytes_of_memory_fail(kind, roots):
    _, parent = roots
    r = _run("x = bytearray(10 * 2**30)\nx[-1] = 1", kind, parent)
    assert r.status == "failed" and "MemoryError" in r.detail


def test_a_huge_file_fails(kind, roots):
    _, parent = roots
    r = _run("with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 2**20)", kind, parent,
             file_bytes=4 << 20)
    assert (r.status, r.detail) == ("failed", "OSError: [Errno 27] File too large") or r.detail.endswith("SIGXFSZ")


def test_programs_run_in_parallel_in_order():
    start = time.monotonic()
    results = sandbox.run_programs(["import time\ntime.sleep(0.5)\nassert False", "pass",
                                    "import time\ntime.sleep(0.5)"], workers=2)
    assert [r.status for r in results] == ["failed", "passed", "passed"]
    assert time.monotonic() - start < 5
    with pytest.raises(UserError, match="workers"):
        sandbox.run_programs(["pass"], workers=0)
    with pytest.raises(UserError, match="timeout_s"):
        sandbox.run_program("pass", timeout_s=0)


def test_sandbox_info_says_what_isolates_programs():
    info = sandbox.sandbox_info()
    assert ("namespaces" in info) != info.startswith("no namespaces")
