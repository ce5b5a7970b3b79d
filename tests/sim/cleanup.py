"""Process-wide undo stack for everything the simulator creates.

Every network namespace, cgroup and process registers its undo here when it is made and
unregisters when it is released normally. Whatever is still registered runs, newest first, at
interpreter exit, and SIGTERM/SIGHUP are turned into KeyboardInterrupt so that `finally`
blocks and context managers run on those signals too (SIGINT already does that).
"""

import atexit
import signal
import sys
import threading
import traceback

_lock = threading.RLock()
_actions = {}  # token -> (description, callable)
_next_token = 0
_installed = False


def register(fn, what):
    """Runs fn() at exit unless unregister(token) is called first. Returns the token."""
    global _next_token
    install()
    with _lock:
        _next_token += 1
        _actions[_next_token] = (what, fn)
        return _next_token


def unregister(token):
    with _lock:
        _actions.pop(token, None)


def pending():
    """Descriptions of the undo actions still registered, oldest first."""
    with _lock:
        return [what for _, (what, _) in sorted(_actions.items())]


def run_all():
    """Runs every registered undo action, newest first; an action that fails is reported
    and the others still run."""
    while True:
        with _lock:
            if not _actions:
                return
            token = max(_actions)
            what, fn = _actions.pop(token)
        try:
            fn()
        except BaseException:  # clean-up must go on whatever one action raised
            sys.stderr.write(f"sim: clean-up of {what} failed:\n{traceback.format_exc()}")


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install():
    """Installs the atexit hook and the signal handlers (once; main thread only)."""
    global _installed
    if _installed:
        return
    _installed = True
    atexit.register(run_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
