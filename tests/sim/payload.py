"""Deterministic pseudo-random byte streams that both ends of a test connection can make.

The stream for (n, seed) is the first n bytes of 64 KiB chunks drawn from random.Random(seed):
the sender and the checker use this one function, so they agree by construction."""

import hashlib
import random

CHUNK = 64 * 1024

SEED_CLIENT = 0        # what tcp_client sends (ECHO, SINK)
SEED_SOURCE = 1        # what tcp_backend sends for SOURCE n
SEED_AFTER_FIN = 2     # what tcp_client sends after the server's FIN


def chunks(n, seed=SEED_CLIENT, chunk=CHUNK):
    """Yields the stream as bytes objects of at most `chunk` bytes."""
    rng = random.Random(seed)
    left = n
    while left > 0:
        block = rng.randbytes(CHUNK)
        take = min(left, CHUNK)
        for off in range(0, take, chunk):
            yield block[off:min(off + chunk, take)]
        left -= take


def sha256(n, seed=SEED_CLIENT):
    h = hashlib.sha256()
    for c in chunks(n, seed):
        h.update(c)
    return h.hexdigest()
