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


def hold(seconds, *procs, interval=0.05):
    """Lets `seconds` pass, failing at once if one of procs (sim.Proc: spindle, a load, a
    backend) ends: a condition that must stay true for a while, not a bare sleep."""
    deadline = time.monotonic() + seconds

    def over():
        for p in procs:
            if not p.alive():
                raise AssertionError(f"{p.name} ended early\n{p.tail()}")
        return time.monotonic() >= deadline
    wait_until(over, seconds + 5, interval=interval, what=f"{seconds:g}s to pass")
