#!/usr/bin/python3
"""spindle's integration suite: real processes in network namespaces (see tests/sim/README.md).

    /usr/bin/python3 tests/integration/run.py [FILTER...] [--except=TEXT...]

Runs every test_*.py here (or only the tests whose id `module.Class.test` contains one of the
FILTERs, and none of the TEXTs given with --except), prints `PASS name`, `FAIL name` with the
traceback, or `SKIP name (reason)` per test, and ends with the line `N passed, N failed, N
skipped`. Exit code 1 if any failed.
Without root every test is skipped. SPINDLE_REQUIRED=1 makes a missing build/bin/spindle a
failure instead of a skip (tests/run_all.sh sets it).
"""

import os
import signal
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for `import sim`
sys.path.insert(0, HERE)

import sim  # noqa: E402

TEST_TIMEOUT = int(os.environ.get("SPINDLE_TEST_TIMEOUT", "120"))  # seconds per test


class TestTimedOut(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimedOut(f"test ran longer than {TEST_TIMEOUT}s")


def test_name(test):
    return test.id()


class Result(unittest.TestResult):
    """Prints one line per test as it ends; counts passed/failed/skipped."""

    def __init__(self, stream):
        super().__init__()
        self.out = stream
        self.passed = 0
        self.failed_names = []
        self.skipped_count = 0
        self._t0 = {}

    def _print(self, text):
        self.out.write(text + "\n")
        self.out.flush()

    def startTest(self, test):
        super().startTest(test)
        self._t0[test.id()] = time.monotonic()
        signal.alarm(TEST_TIMEOUT)

    def stopTest(self, test):
        signal.alarm(0)
        super().stopTest(test)

    def _secs(self, test):
        t0 = self._t0.get(test.id())
        return f" ({time.monotonic() - t0:.2f}s)" if t0 else ""

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1
        self._print(f"PASS {test_name(test)}{self._secs(test)}")

    def _fail(self, test, err, kind):
        self.failed_names.append(test_name(test))
        self._print(f"FAIL {test_name(test)}{self._secs(test)}")
        text = self._exc_info_to_string(err, test) if err else kind
        for line in text.rstrip().splitlines():
            self._print("    " + line)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(test, err, "failure")

    def addError(self, test, err):
        super().addError(test, err)
        self._fail(test, err, "error")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._fail(subtest, err, "subtest failure")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skipped_count += 1
        self._print(f"SKIP {test_name(test)} ({reason})")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.passed += 1
        self._print(f"PASS {test_name(test)} (expected failure)")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._fail(test, None, "unexpected success")


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def collect(filters, excepted=()):
    loader = unittest.TestLoader()
    suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    tests = list(_flatten(suite))
    broken = [t for t in tests if t.__class__.__name__ == "_FailedTest"]
    tests = [t for t in tests if t not in broken]
    if filters:
        tests = [t for t in tests if any(f in t.id() for f in filters)]
    tests = [t for t in tests if not any(e in t.id() for e in excepted)]
    return broken + tests


def main(argv):
    filters = [a for a in argv if not a.startswith("-")]
    excepted = [a.removeprefix("--except=") for a in argv if a.startswith("--except=")]
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    sim.cleanup.install()
    signal.signal(signal.SIGALRM, _on_alarm)
    out = sys.stdout
    result = Result(out)
    tests = collect(filters, excepted)
    if filters and not tests:
        result._print(f"no test id contains any of: {' '.join(filters)}")
        result._print("0 passed, 0 failed, 0 skipped")
        return 1
    root = os.geteuid() == 0
    interrupted = False
    try:
        if not root:
            for t in tests:
                if t.__class__.__name__ == "_FailedTest":
                    t.run(result)  # a test module that does not even import is a failure
                else:
                    result.addSkip(t, "needs root")
        else:
            # A suite keeps the order and runs setUpClass/tearDownClass once per class.
            unittest.TestSuite(tests).run(result)
    except KeyboardInterrupt:
        interrupted = True
        result._print("INTERRUPTED: cleaning up")
    finally:
        signal.alarm(0)
        if interrupted:
            sim.cleanup.run_all()

    if root and not interrupted:
        # Every netns, veth and cgroup the run made must be gone: a test leaves the machine
        # as it found it, also when it fails.
        left = sim.leftovers() + [f"process {p!r}" for p in sim.proc.live()]
        if left:
            result.failed_names.append("suite.no_leftovers")
            result._print("FAIL suite.no_leftovers")
            for item in left:
                result._print(f"    left behind: {item}")
        else:
            result.passed += 1
            result._print("PASS suite.no_leftovers")

    failed = len(result.failed_names)
    if failed:
        sim.paths.keep_logs(True)
        if sim.paths.current_workdir():
            result._print(f"logs kept in {sim.paths.current_workdir()}")
    result._print(f"{result.passed} passed, {failed + (1 if interrupted else 0)} failed, "
                  f"{result.skipped_count} skipped")
    return 1 if failed or interrupted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
