"""LocalServer's process tree: stop, interpreter exit and a crashed parent leave no server running, in bounded time.

In Slicer, ``PythonSlicer`` is CTKAppLauncher: it starts the real interpreter (python-real) as a QProcess child with
ForwardedChannels (the child writes straight into the pipes LocalServer reads) and forwards no signal. The
``launcher`` fixture writes a stand-in that does the same: it runs ``sys.executable`` with its own arguments as a
child with inherited stdio, handles no signal, waits and exits with the child's code. Real processes throughout;
every wait is bounded, so a regression fails instead of hanging. The scenarios read /proc (Linux).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nnmamba import process_tree as tree
from nnmamba.cli import build_parser
from nnmamba.client_local import LocalServer

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists() or os.name != "posix",
                                reason="the scenarios start a shebang script and read /proc")
STOP_LIMIT = 15.0   # seconds: LocalServer's grace period (5 s) + the kill, with room for a slow machine


@pytest.fixture
def launcher(tmp_path):
    """An executable stand-in for CTKAppLauncher (see the module docstring)."""
    path = tmp_path / "PythonSlicer"
    path.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import subprocess, sys
        sys.exit(subprocess.call([{sys.executable!r}] + sys.argv[1:]))
        """))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def models_dir(tmp_path):
    path = tmp_path / "models"
    path.mkdir()
    return str(path)


def _stat(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return fields[0].decode(), int(fields[1])   # state, parent pid


def running(pid):
    """The process exists and is not a zombie (in a container nobody may reap an orphan's zombie)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def real_interpreter(launcher_pid, timeout=10.0):
    """The pid of the launcher's child, the real server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in filter(str.isdigit, os.listdir("/proc")):
            stat = _stat(name)
            if stat is not None and stat[1] == launcher_pid:
                return int(name)
        time.sleep(0.05)
    raise AssertionError(f"the launcher {launcher_pid} has no child")


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while any(map(running, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if running(pid)]


def kill_leftovers(pids):
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def timed_stop(server):
    """Seconds server.stop() took; fails (instead of hanging) past STOP_LIMIT."""
    thread = threading.Thread(target=server.stop, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(STOP_LIMIT)
    assert not thread.is_alive(), f"stop() still runs after {STOP_LIMIT:g} s"
    return time.monotonic() - started


# -- stop() and `with` ---------------------------------------------------------------------------------------------
@linux_only
@pytest.mark.parametrize("through", ["interpreter", "launcher"])
def test_stop_ends_the_whole_tree_gracefully_and_quickly(through, launcher, models_dir):
    python = launcher if through == "launcher" else sys.executable
    server = LocalServer(python=python, device="cpu", models_dir=models_dir, start_timeout=60).start()
    pids = [server.process.pid]
    if through == "launcher":
        pids.append(real_interpreter(pids[0]))
    try:
        seconds = timed_stop(server)
        print(f"stop() through the {through}: {seconds:.2f} s")
        assert wait_gone(pids, 2) == []
        assert seconds < 4   # SIGTERM reached the real server: no wait for the grace period and the kill
        assert any("Finished server process" in line for line in server.stderr_tail)   # uvicorn's graceful end
        assert server.process is None and server.url is None
    finally:
        kill_leftovers(pids)


@linux_only
def test_with_exit_through_the_launcher_leaves_nothing(launcher, models_dir):
    with LocalServer(python=launcher, device="cpu", models_dir=models_dir, start_timeout=60) as server:
        pids = [server.process.pid]
        pids.append(real_interpreter(pids[0]))
        assert server.client().health()["status"] == "ok"
    assert wait_gone(pids, STOP_LIMIT) == []


@linux_only
def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period(launcher):
    """The bounded kill: a real interpreter under the launcher that ignores SIGTERM (as a stalled shutdown would)."""
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
             "time.sleep(600)"
    process = subprocess.Popen([launcher, "-c", ignore], stdout=subprocess.PIPE, **tree.popen_options())
    pids = [process.pid]
    try:
        assert process.stdout.readline() == b"ready\n"
        pids.append(real_interpreter(process.pid))
        started = time.monotonic()
        tree.stop_tree(process, grace=1.0)
        seconds = time.monotonic() - started
        assert 1.0 <= seconds < 5 and process.returncode is not None
        assert wait_gone(pids, 2) == []
    finally:
        kill_leftovers(pids)
        process.stdout.close()


# -- the process that started the server ends ----------------------------------------------------------------------
SCENARIO = """\
import sys
from nnmamba.client_local import LocalServer
server = LocalServer(python=sys.argv[1], device="cpu", models_dir=sys.argv[2], start_timeout=60).start()
print(server.process.pid, flush=True)
sys.stdin.readline()   # the test has noted the pids; then return without stop(): atexit stops the server
"""


def start_scenario(launcher, models_dir):
    """A Python process that starts a LocalServer through the launcher: (that process, [launcher pid, server pid])."""
    process = subprocess.Popen([sys.executable, "-c", SCENARIO, launcher, models_dir], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 90)
    line = process.stdout.readline() if ready else ""
    if not line.strip().isdigit():
        process.kill()
        process.wait()
        pytest.fail(f"the scenario printed no pid: {line!r}")
    launcher_pid = int(line)
    return process, [launcher_pid, real_interpreter(launcher_pid)]


@linux_only
def test_interpreter_exit_stops_the_server_through_atexit(launcher, models_dir):
    process, pids = start_scenario(launcher, models_dir)
    try:
        started = time.monotonic()
        process.stdin.write("\n")
        process.stdin.close()
        assert process.wait(timeout=STOP_LIMIT) == 0
        print(f"interpreter exit with the server through the launcher: {time.monotonic() - started:.2f} s")
        assert wait_gone(pids, 2) == []
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        kill_leftovers(pids)


@linux_only
def test_the_server_ends_when_its_parent_is_killed(launcher, models_dir):
    process, pids = start_scenario(launcher, models_dir)
    try:
        assert all(map(running, pids))
        process.kill()   # SIGKILL: no atexit, no stop(); only the server's --parent-pid watchdog is left
        process.wait()
        started = time.monotonic()
        assert wait_gone(pids, 10) == []
        print(f"server gone {time.monotonic() - started:.2f} s after its parent was killed")
    finally:
        process.stdin.close()
        process.stdout.close()
        kill_leftovers(pids)


# -- the pieces ----------------------------------------------------------------------------------------------------
def test_popen_options_give_the_child_its_own_group_and_no_console_window():
    assert tree.popen_options("posix") == {"start_new_session": True}
    assert tree.popen_options("nt") == {"creationflags": 0x00000200 | 0x08000000}
    assert getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200) == 0x200   # the values Windows' subprocess has
    assert getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000) == 0x08000000
    assert tree.hidden_window_options("nt") == {"creationflags": 0x08000000}
    assert tree.hidden_window_options("posix") == {}


def test_tree_kill_command_kills_the_whole_tree():
    assert tree.tree_kill_command(1234) == ["taskkill", "/T", "/F", "/PID", "1234"]
    assert tree.tree_kill_command(1234, force=False) == ["taskkill", "/T", "/PID", "1234"]


def test_the_command_passes_this_process_as_parent_after_serve():
    from NNMambaSlicerLib.backend import _local_server_class

    for server in (LocalServer(python="py", models_dir="m"), _local_server_class()(python="py", models_dir="m")):
        command = server.command()
        serve_at = command.index("serve")
        assert command[command.index("--parent-pid") + 1] == str(os.getpid())
        args = build_parser().parse_args(command[serve_at:])
        assert args.parent_pid == os.getpid() and args.models_dir == "m"


@linux_only
def test_pid_alive_counts_a_zombie_as_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while running(child.pid) and time.monotonic() < deadline:   # not reaped: a zombie once it has exited
            time.sleep(0.02)
        assert _stat(child.pid)[0] == "Z" and not tree.pid_alive(child.pid)
    finally:
        child.wait()
    assert tree.pid_alive(os.getpid()) and not tree.pid_alive(child.pid)


def test_watch_parent_calls_back_once_the_process_has_ended():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    ended = threading.Event()
    tree.watch_parent(child.pid, ended.set, interval=0.1)
    assert not ended.wait(0.2)
    child.wait()
    assert ended.wait(5)


def test_the_watchdog_exits_hard_when_the_graceful_shutdown_stalls():
    """A server whose shutdown never ends (here: a main thread that ignores should_exit) is ended by os._exit."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stalled = ("import sys, time, types; from nnmamba.server import main; main.PARENT_GONE_EXIT_AFTER = 0.5; "
               "server = types.SimpleNamespace(should_exit=False); "
               f"main._stop_with_parent(server, {dead.pid}); time.sleep(60)")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", stalled], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and time.monotonic() - started < 20
