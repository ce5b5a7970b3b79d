"""Spawned processes: PID recorded, stdout/stderr collected to files, waits with deadlines,
killed by PID when released (or at exit, through the clean-up stack)."""

import itertools
import os
import re
import signal as _signal
import subprocess
import threading
import weakref

from . import cleanup
from .wait import WaitTimeout, wait_until

_seq = itertools.count(1)
_seq_lock = threading.Lock()
_all = weakref.WeakSet()


def live():
    """Every Proc of this run still running (none should be, after the clean-up)."""
    return [p for p in list(_all) if p.alive()]


def _next_seq():
    with _seq_lock:
        return next(_seq)


def _safe_name(name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60] or "proc"


def _descendants(pid):
    """The PIDs of pid's children, grandchildren... (spindle's proxy is its child)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(c) for c in f.read().split()]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def _gone(pid):
    return not os.path.exists(f"/proc/{pid}")


class ProcessExited(AssertionError):
    """The process ended while something was still waited for."""


class Proc:
    """One child process. Its stdout and stderr go to files in `logdir`.

    The process starts in a new session, so that a Ctrl-C on the terminal reaches only the
    runner, which then stops its children by PID in order."""

    def __init__(self, argv, *, logdir, name=None, env=None, preexec_fn=None, cwd=None,
                 stdin=subprocess.DEVNULL):
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        base = os.path.join(logdir, f"{_next_seq():03d}-{_safe_name(self.name)}")
        self.stdout_path = base + ".out"
        self.stderr_path = base + ".err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self._popen = subprocess.Popen(
                self.argv, stdin=stdin, stdout=out, stderr=err, env=env, cwd=cwd,
                preexec_fn=preexec_fn, start_new_session=True, close_fds=True)
        self.pid = self._popen.pid
        self._token = cleanup.register(self.kill, f"process {self.name} (pid {self.pid})")
        _all.add(self)

    def __repr__(self):
        return f"<Proc {self.name} pid={self.pid} rc={self.returncode}>"

    # --- state -------------------------------------------------------------------------

    @property
    def returncode(self):
        """None while running, else the exit code (negative: killed by that signal)."""
        rc = self._popen.poll()
        if rc is not None:
            cleanup.unregister(self._token)
        return rc

    def alive(self):
        return self.returncode is None

    # --- output --------------------------------------------------------------------------

    @staticmethod
    def _read(path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stdout(self):
        return self._read(self.stdout_path)

    def stderr(self):
        return self._read(self.stderr_path)

    def stderr_lines(self):
        return self.stderr().splitlines()

    def stdout_lines(self):
        return self.stdout().splitlines()

    def tail(self, n=20):
        """The last lines of stderr and stdout, for failure messages."""
        parts = [f"{self.name} (pid {self.pid}, rc {self.returncode})"]
        for label, text in (("stderr", self.stderr()), ("stdout", self.stdout())):
            lines = text.splitlines()[-n:]
            if lines:
                parts.append(f"--- {label} ({self.stderr_path if label == 'stderr' else self.stdout_path}):")
                parts.extend("    " + line for line in lines)
        return "\n".join(parts)

    # --- waiting -------------------------------------------------------------------------

    def wait(self, timeout):
        """Waits for the process to end; returns its exit code or raises WaitTimeout."""
        try:
            rc = self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(f"{self.name} (pid {self.pid}) still running after {timeout:g}s\n"
                              + self.tail()) from None
        cleanup.unregister(self._token)
        return rc

    def wait_for(self, predicate, timeout, *, what="condition", while_alive=True, interval=0.02):
        """Waits until predicate() is truthy. With while_alive, the process ending first is a
        failure (ProcessExited) rather than a wait until the deadline."""
        def check():
            value = predicate()
            if value:
                return value
            if while_alive and not self.alive():
                value = predicate()  # output written just before exit
                if value:
                    return value
                raise ProcessExited(f"{self.name} exited (rc {self.returncode}) while waiting "
                                    f"for {what}\n{self.tail()}")
            return None
        return wait_until(check, timeout, interval=interval, what=f"{what} from {self.name}",
                          details=self.tail)

    def wait_for_line(self, pattern, timeout, *, stream="stderr", while_alive=True):
        """Waits for a line matching the regex `pattern`; returns the re.Match."""
        rx = re.compile(pattern)
        read = self.stderr if stream == "stderr" else self.stdout

        def find():
            for line in read().splitlines():
                m = rx.search(line)
                if m:
                    return m
            return None
        return self.wait_for(find, timeout, what=f"{stream} line /{pattern}/",
                             while_alive=while_alive)

    # --- signals -------------------------------------------------------------------------

    def signal(self, sig):
        """Sends sig to this PID (never to a name or a group) while the process is not reaped."""
        if self.returncode is None:
            self._popen.send_signal(sig)

    def kill(self, timeout=5.0):
        """SIGKILL and reap, its descendants first (so that its own children are reaped by
        it, not orphaned while they die). Works on a stopped process too. Idempotent."""
        if self.returncode is None:
            kids = _descendants(self.pid)
            for kid in kids:
                try:
                    os.kill(kid, _signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # Reaped by their parent (spindle's privileged part reaps its proxy at once), unless
            # it is stopped: then they go to init once it is killed.
            try:
                wait_until(lambda: all(map(_gone, kids)), 2.0, interval=0.005)
            except WaitTimeout:
                pass
            try:
                self._popen.send_signal(_signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait(timeout)
        return self.returncode

    def stop(self, timeout=5.0, sig=_signal.SIGTERM):
        """Asks the process to end with sig (continuing it first if stopped), SIGKILL after
        timeout. Returns the exit code."""
        if self.returncode is None:
            self.signal(sig)
            self.signal(_signal.SIGCONT)
            try:
                return self.wait(timeout)
            except WaitTimeout:
                return self.kill()
        return self.returncode

