"""JSON-lines logs: what the test peers (tcp_backend, dns_responder, tests/grpc/server.py)
saw, one JSON object a line, and the tests' way of reading them back.

Stdlib only, and importable both as sim.jsonl and, from a script in this folder or one that
puts this folder on sys.path, as plain `jsonl`: the peers run as scripts in the Pods.
"""

import json
import threading


class JsonLinesLog:
    """Appends one JSON object a line (keys sorted), from any thread. Each line is written
    whole and flushed to the kernel at once, so it survives a SIGKILL of the writer."""

    def __init__(self, path):
        self._f = open(path, "a", buffering=1)
        self._lock = threading.Lock()

    def write(self, entry):
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()


def read_complete(path):
    """The objects of every complete line of the log at path, oldest first; [] while it does
    not exist. A last line without its newline is still being written: left for next time."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]
