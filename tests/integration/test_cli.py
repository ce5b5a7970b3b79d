"""spindle's command line: --check-config, --version, --help. No node needed."""

import os
import re
import subprocess

import sim
from support import SimTestCase, expected_build, without_dirty

GOOD = """\
proxy:
  listen: ["198.18.0.1:15001", "[2001:2::1]:15001"]
  workers: 2
redirect:
  cgroup: ""
  heartbeat_timeout: 1s
services:
  - name: echo
    intercept: ["198.19.0.10:7000", "[2001:2:0:ff::10]:7000"]
    endpoints:
      static: ["198.18.1.3:7000"]
"""


class CliTest(SimTestCase):
    needs_spindle = True

    def spindle(self, *args):
        return subprocess.run([sim.SPINDLE_BIN, *args], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)

    def write(self, name, text):
        path = os.path.join(sim.paths.subdir("cli"), name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_check_config_accepts_a_good_file(self):
        p = self.spindle("--check-config", self.write("good.yaml", GOOD))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("error", p.stderr)

    def test_check_config_rejects_a_bad_file_naming_the_line(self):
        lines = GOOD.splitlines()
        lines.insert(5, "  heartbeat_timeout_typo: 1s")  # line 6, inside redirect:
        path = self.write("bad.yaml", "\n".join(lines) + "\n")
        p = self.spindle("--check-config", path)
        self.assertEqual(p.returncode, 1, p.stderr)
        errors = [line for line in p.stderr.splitlines() if line.startswith("spindle: error: ")]
        self.assertEqual(len(errors), 1, p.stderr)
        self.assertIn("bad.yaml:6:", errors[0])
        self.assertIn("heartbeat_timeout_typo", errors[0])

    def test_check_config_missing_file(self):
        p = self.spindle("--check-config", "/nonexistent/spindle.yaml")
        self.assertEqual(p.returncode, 1)
        self.assertIn("/nonexistent/spindle.yaml", p.stderr)

    def test_version_is_the_checkouts_git_describe_or_the_version_given(self):
        p = self.spindle("--version")
        self.assertEqual(p.returncode, 0, p.stderr)
        expected = expected_build()
        if expected is None:
            self.skipTest("not a git checkout, and no VERSION and REVISION given")
        version, revision = expected
        m = re.fullmatch(r"spindle (\S+) \(revision ([0-9a-zA-Z._+~-]+)\)", p.stdout.strip())
        self.assertIsNotNone(m, f"--version printed {p.stdout!r}")
        self.assertEqual((without_dirty(m[1]), m[2]), (without_dirty(version), revision),
                         f"{sim.SPINDLE_BIN} is the build of another commit or VERSION than "
                         f"this run's: rebuild it (make)")

    def test_help(self):
        p = self.spindle("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        for word in ("--config", "--check-config", "--probe", "--version", "--help"):
            self.assertIn(word, p.stdout)

    def test_unknown_option_exits_1(self):
        p = self.spindle("--no-such-option")
        self.assertEqual(p.returncode, 1)
        self.assertIn("--no-such-option", p.stderr)

    def test_check_config_rejects_a_bad_value_naming_the_line(self):
        path = self.write("bad-value.yaml", GOOD.replace("heartbeat_timeout: 1s",
                                                         "heartbeat_timeout: soon"))
        p = self.spindle("--check-config", path)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("bad-value.yaml:6:", p.stderr)
        self.assertIn("heartbeat_timeout", p.stderr)

    def test_probe_without_admin_socket_says_so(self):
        path = self.write("no-socket.yaml", GOOD)
        p = self.spindle("--config", path, "--probe", "/ready")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("sets no admin.socket", p.stderr)

    def test_probe_with_no_spindle_listening_fails(self):
        sock = os.path.join(sim.paths.subdir("cli"), "nobody.sock")
        path = self.write("socket.yaml", GOOD + f"admin:\n  socket: {sock}\n")
        p = self.spindle("--config", path, "--probe", "/healthz")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(sock, p.stderr)
