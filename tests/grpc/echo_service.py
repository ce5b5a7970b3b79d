"""What tests/grpc/server.py and tests/grpc/client.py agree on: the service's method paths,
the request metadata that steers the server, message limits, and the deterministic payloads
both ends can make. Raw bytes on the wire, no protobuf, so no codegen is needed.

Request metadata the server understands (all optional):

    x-call-id           a label the server writes into its log with every event of the call
    x-sleep-ms          Unary: sleep this long before answering, watching for cancellation;
                        ServerStream: sleep this long between messages
    x-status            answer with this gRPC status (name "NOT_FOUND" or number "5") ...
    x-message           ... and this status message (ASCII), or
    x-message-bin       ... this one (UTF-8 bytes: any text; gRPC percent-encodes it)
    x-headers-first     with x-status: send initial metadata first, so the error comes in
                        trailers after headers; without it the error is a trailers-only
                        response (one HEADERS frame with END_STREAM)
    x-respond-bytes     Unary: answer with blob(N, x-respond-seed) instead of the echo
    x-respond-seed      seed for x-respond-bytes (default RESPONSE_SEED)
    x-echo-NAME[-bin]   echoed unchanged in the initial metadata, and in the trailers as
                        x-trail-NAME[-bin]

The server answers every call with `x-pod: <its name>` in the initial metadata (unless the
response is trailers-only) and in the trailers; Unary trailers also carry x-req-bytes and
x-req-sha256 of the request it received.
"""

import hashlib
import random

SERVICE = "spindle.test.Echo"
UNARY = f"/{SERVICE}/Unary"
CLIENT_STREAM = f"/{SERVICE}/ClientStream"
SERVER_STREAM = f"/{SERVICE}/ServerStream"
BIDI = f"/{SERVICE}/Bidi"
STATS = f"/{SERVICE}/Stats"

MIB = 1024 * 1024
BIG = 16 * MIB
# gRPC frames a message with a 5-byte prefix; leave room above 16 MiB for it and for any
# metadata accounting, on both ends.
MAX_MESSAGE = BIG + 64 * 1024

RESPONSE_SEED = 7
DEFAULT_PORT = 50051

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


def blob(n, seed):
    """n deterministic pseudo-random bytes for seed: the same on both ends."""
    return random.Random(seed).randbytes(n) if n > 0 else b""


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def md_get(metadata, key, default=None):
    """The last value of key in a metadata sequence of (key, value) pairs."""
    value = default
    for k, v in metadata or ():
        if k == key:
            value = v
    return value
