"""Waiting on a condition with a deadline: the only synchronisation the simulator uses."""

import time


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline. An AssertionError, so that a test that
    times out waiting reports a failure (what it waited for), not an error."""


def wait_until(predicate, timeout, *, interval=0.02, what="condition", details=None):
    """Calls predicate() until it returns something truthy and returns that value.

    Raises WaitTimeout after `timeout` seconds; `details`, a callable, adds context to the
    message (a log tail, say). The loop is bounded in time and in count."""
    deadline = time.monotonic() + timeout
    max_rounds = int(timeout / interval) + 2
    value = None
    for _ in range(max_rounds):
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(interval, left))
    value = predicate()
    if value:
        return value
    msg = f"timed out after {timeout:g}s waiting for {what}"
    if details is not None:
        try:
            extra = details()
        except Exception as e:  # context only: never hide the timeout behind it
            extra = f"(details unavailable: {e})"
        if extra:
            msg += "\n" + extra
    raise WaitTimeout(msg)
