"""cgroup v2 directories for the simulated node and its Pods."""

import errno
import os
import re
import signal
import time

from . import cleanup
from .wait import wait_until


def _unescape_mountinfo(field):
    # mountinfo writes space, tab, newline and backslash as \ooo (octal)
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def cgroup2_mount(mountinfo="/proc/self/mountinfo"):
    """The mount point of the cgroup2 hierarchy, from mountinfo (hybrid hosts have it at
    /sys/fs/cgroup/unified, pure v2 hosts at /sys/fs/cgroup). None if not mounted."""
    with open(mountinfo) as f:
        for line in f:
            pre, sep, post = line.partition(" - ")
            if sep and post.split()[0] == "cgroup2":
                return _unescape_mountinfo(pre.split()[4])
    return None


def is_cgroup2(path):
    """True if path is a directory of the cgroup2 hierarchy."""
    mount = cgroup2_mount()
    if mount is None:
        return False
    real = os.path.realpath(path)
    inside = real == mount or real.startswith(mount.rstrip("/") + "/")
    return inside and os.path.exists(os.path.join(real, "cgroup.controllers"))


class Cgroup:
    """A cgroup directory this process created. Removed (processes first, by PID) on close."""

    def __init__(self, path, *, create=True):
        self.path = path
        self.children = []
        self._token = None
        if create:
            os.mkdir(path)
            self._token = cleanup.register(self.close, f"cgroup {path}")

    def __repr__(self):
        return f"<Cgroup {self.path}>"

    @property
    def name(self):
        return os.path.basename(self.path)

    @property
    def id(self):
        """The cgroup id the kernel reports (bpf_get_current_cgroup_id): the inode number."""
        return os.stat(self.path).st_ino

    def child(self, name):
        c = Cgroup(os.path.join(self.path, name))
        # the parent's close removes the child too; one undo entry per tree is enough
        cleanup.unregister(c._token)
        c._token = None
        self.children.append(c)
        return c

    def procs(self, recursive=True):
        pids = []
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                pids = [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []
        if recursive:
            for c in self.children:
                pids.extend(c.procs())
        return pids

    def add(self, pid=0):
        """Moves pid (0: the calling process) into this cgroup."""
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def populated(self):
        try:
            with open(os.path.join(self.path, "cgroup.events")) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "populated":
                        return v.strip() == "1"
        except FileNotFoundError:
            return False
        return False

    def kill_procs(self, timeout=5.0):
        """SIGKILLs, by PID, every process left in this tree: all of them are descendants of
        processes this run spawned into it. Waits until the tree is empty."""
        for _ in range(50):
            pids = self.procs()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        wait_until(lambda: not self.populated(), timeout, what=f"{self.path} to empty")

    def close(self):
        """Idempotent: kills what is left inside, removes the directories bottom-up."""
        if not os.path.isdir(self.path):
            self._unregister()
            return
        self.kill_procs()
        for c in reversed(self.children):
            c.close()
        for attempt in range(50):
            try:
                os.rmdir(self.path)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or attempt == 49:
                    raise
                time.sleep(0.02)
        self._unregister()

    def _unregister(self):
        if self._token is not None:
            cleanup.unregister(self._token)
            self._token = None
