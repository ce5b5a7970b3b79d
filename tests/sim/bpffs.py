"""A private bpf filesystem for one test: where spindle pins its maps (redirect.pin_path) so
that two spindle processes of one simulated node share them, as in a rollout. Unmounting it
removes every pin, whatever the processes left."""

import os
import subprocess

from . import cleanup, paths


class Bpffs:
    def __init__(self, name="bpffs"):
        self.path = paths.subdir(name)
        subprocess.run(["mount", "-t", "bpf", "bpf", self.path], check=True, capture_output=True)
        self._token = cleanup.register(self.close, f"bpffs {self.path}")

    def pins(self, under="spindle"):
        """Every file pinned below `under` in the mount, relative to the mount."""
        out = []
        for root, _dirs, files in os.walk(os.path.join(self.path, under)):
            out += [os.path.relpath(os.path.join(root, f), self.path) for f in files]
        return sorted(out)

    def close(self):
        if self._token is None:
            return
        subprocess.run(["umount", self.path], capture_output=True)
        cleanup.unregister(self._token)
        self._token = None
