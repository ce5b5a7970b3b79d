"""Where things are: the repository, the interpreter, the per-run names and log folder."""

import os
import shutil
import tempfile
import threading

from . import cleanup

SIM_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(SIM_DIR))
# Debian's interpreter: the python3 first on PATH may be another one without Debian's modules.
PYTHON = "/usr/bin/python3"
SPINDLE_BIN = os.path.join(REPO, "build", "bin", "spindle")
TCP_BACKEND = os.path.join(SIM_DIR, "tcp_backend.py")
TCP_CLIENT = os.path.join(SIM_DIR, "tcp_client.py")
TCP_CONNS = os.path.join(SIM_DIR, "tcp_conns.py")
NO_IO_URING = os.path.join(SIM_DIR, "no_io_uring.py")

# Every netns this run makes starts with NETNS_PREFIX, every cgroup with CGROUP_PREFIX, so
# that leftovers of this run can be listed (and told apart from a parallel run's).
NETNS_PREFIX = f"spd{os.getpid()}-"
CGROUP_PREFIX = f"spindle-test-{os.getpid()}-"

_lock = threading.Lock()
_workdir = None
_keep = os.environ.get("SPINDLE_SIM_KEEP_LOGS") == "1"


def keep_logs(keep=True):
    """Keeps the run's log folder at exit (a runner sets this when a test failed)."""
    global _keep
    _keep = keep


def workdir():
    """The run's scratch and log folder, made on first use, removed at exit unless kept."""
    global _workdir
    with _lock:
        if _workdir is None:
            _workdir = tempfile.mkdtemp(prefix=NETNS_PREFIX)
            os.chmod(_workdir, 0o755)  # processes run as nobody read their config here
            cleanup.register(_remove_workdir, f"folder {_workdir}")
        return _workdir


def current_workdir():
    """The log folder if one was made, else None."""
    return _workdir


def _remove_workdir():
    global _workdir
    with _lock:
        if _workdir and not _keep:
            shutil.rmtree(_workdir, ignore_errors=True)
        _workdir = None


def subdir(name):
    path = os.path.join(workdir(), name)
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path
