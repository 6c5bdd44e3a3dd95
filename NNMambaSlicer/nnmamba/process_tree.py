"""Stopping a child process together with everything it started, and noticing that a parent process died.

Slicer's ``PythonSlicer`` is a launcher (CTKAppLauncher): it runs the real interpreter as its own child and forwards
no signal, so killing the process we started would orphan the real server. The child therefore gets a process group
of its own (POSIX: a new session; Windows: a new process group, no console window) and is stopped as a tree.
Standard library only: Slicer bundles no psutil.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

CREATE_NEW_PROCESS_GROUP = 0x00000200   # Windows process creation flags (subprocess has them on Windows only)
CREATE_NO_WINDOW = 0x08000000


def popen_options(os_name=os.name):
    """Popen arguments that make the child the root of its own group, so that its whole tree can be stopped."""
    if os_name == "nt":
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


def tree_kill_command(pid, force=True):
    """Windows: ``taskkill`` of ``pid`` and all its descendants (``force=False``: the polite request to close)."""
    return ["taskkill", "/T"] + (["/F"] if force else []) + ["/PID", str(pid)]


def hidden_window_options(os_name=os.name):
    """Popen arguments for a helper command (taskkill) that must not flash a console window."""
    return {"creationflags": CREATE_NO_WINDOW} if os_name == "nt" else {}


def stop_tree(process, grace=5.0, kill_wait=3.0):
    """Stop ``process`` (a Popen started with :func:`popen_options`) and its descendants: a polite request, then a
    kill after ``grace`` seconds; the direct child is reaped. Bounded: returns within about grace + kill_wait + 2 s
    whatever the processes do."""
    if os.name == "nt":
        _stop_tree_windows(process, grace, kill_wait)
    else:
        _stop_group_posix(process, grace, kill_wait)
    try:
        process.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        pass


def _stop_group_posix(process, grace, kill_wait):
    group = process.pid   # start_new_session: the child leads a group of the same id, which its children join
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            process.send_signal(sig)
        if _wait_until(lambda: process.poll() is not None and not group_alive(group), wait):
            return


def _stop_tree_windows(process, grace, kill_wait):
    def taskkill(force):
        try:
            return subprocess.run(tree_kill_command(process.pid, force), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=kill_wait,
                                  **hidden_window_options("nt")).returncode
        except (OSError, subprocess.TimeoutExpired):
            return None

    if process.poll() is None and taskkill(force=False) == 0:   # console programs refuse it: then no wait
        _wait_until(lambda: process.poll() is not None, grace)
    taskkill(force=True)   # the tree also when the root has exited by itself
    if process.poll() is None:
        process.kill()


def _wait_until(condition, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _proc_stat(pid):
    """(state, parent pid, process group) from /proc, None when the process or /proc (macOS) is not there."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0].decode(), int(fields[1]), int(fields[2])


def group_alive(group):
    """POSIX: whether a process of ``group`` still runs. Zombies do not count where /proc tells them apart: in a
    container nobody may reap an orphan, and a zombie holds no pipe and no port."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc/self"):
        return True
    stats = (_proc_stat(name) for name in os.listdir("/proc") if name.isdigit())
    return any(stat[2] == group and stat[0] != "Z" for stat in stats if stat is not None)


def pid_alive(pid):
    """POSIX: whether process ``pid`` runs (a zombie is dead). Not for Windows, where os.kill terminates."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] != "Z"


def _windows_liveness(pid):
    """Windows: a callable telling whether ``pid`` runs. The handle is opened once and kept, so a later process
    that reuses the pid is not mistaken for the parent."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.WaitForSingleObject.restype = wintypes.DWORD
    kernel32.WaitForSingleObject.argtypes = (wintypes.HANDLE, wintypes.DWORD)
    synchronize, wait_timeout, access_denied = 0x00100000, 0x00000102, 5
    handle = kernel32.OpenProcess(synchronize, False, pid)
    if not handle:
        exists = ctypes.get_last_error() == access_denied
        return lambda: exists
    return lambda: kernel32.WaitForSingleObject(handle, 0) == wait_timeout


def watch_parent(pid, on_death, interval=1.0):
    """Call ``on_death()`` once, from a daemon thread, when process ``pid`` has ended (checked every ``interval``
    seconds): a server started for a program ends with it, even when that program crashed."""
    alive = _windows_liveness(pid) if os.name == "nt" else (lambda: pid_alive(pid))

    def watch():
        while alive():
            time.sleep(interval)
        on_death()

    thread = threading.Thread(target=watch, name="nnmamba-parent-watchdog", daemon=True)
    thread.start()
    return thread
