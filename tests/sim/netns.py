"""Named network namespaces (`ip netns`) and commands run inside them.

Nothing here touches the root network namespace: addresses, routes and sysctls are only ever
set with `ip -n NAME` or from a process that entered NAME."""

import os
import subprocess

from . import cleanup

NETNS_DIR = "/run/netns"
IP = "ip"
NSENTER = "nsenter"


class CommandError(RuntimeError):
    pass


def run(argv, *, input=None, timeout=30, check=True):
    """Runs a short command, returns CompletedProcess (text); raises CommandError with its
    output when it fails and check is set."""
    p = subprocess.run([str(a) for a in argv], input=input, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise CommandError(f"{' '.join(map(str, argv))} exited {p.returncode}\n"
                           f"stdout: {p.stdout.strip()}\nstderr: {p.stderr.strip()}")
    return p


def list_names():
    p = run([IP, "netns", "list"], check=False)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def enter_argv(name, argv):
    """argv run inside netns `name`. nsenter execs the command, so the PID is the command's;
    unlike `ip netns exec` it does not remount /sys, so the cgroup tree stays visible."""
    return [NSENTER, f"--net={os.path.join(NETNS_DIR, name)}", "--", *[str(a) for a in argv]]


class Netns:
    """A network namespace this process created; deleted (idempotently) by close().

    Processes inside must have been stopped before; links inside (veth ends) go with it."""

    def __init__(self, name):
        self.name = name
        run([IP, "netns", "add", name])
        self._token = cleanup.register(self.close, f"netns {name}")

    def __repr__(self):
        return f"<Netns {self.name}>"

    @property
    def path(self):
        return os.path.join(NETNS_DIR, self.name)

    def ip(self, *args, check=True):
        """`ip -n NAME args...`"""
        return run([IP, "-n", self.name, *args], check=check)

    def ip_batch(self, commands):
        """Several `ip` commands in one process: `ip -n NAME -batch -`."""
        if commands:
            run([IP, "-n", self.name, "-batch", "-"], input="\n".join(commands) + "\n")

    def exec(self, argv, *, timeout=30, check=True, input=None):
        return run(enter_argv(self.name, argv), timeout=timeout, check=check, input=input)

    def sysctl(self, settings):
        """Sets net sysctls inside this namespace: {"net.ipv4.ip_forward": 1, ...}.
        /proc/sys/net shows the namespace of the process that opens it."""
        script = []
        args = []
        for i, (key, value) in enumerate(settings.items()):
            path = "/proc/sys/" + key.replace(".", "/")
            script.append(f'printf "%s\\n" "${2 * i + 1}" > "${2 * i + 2}"')
            args += [str(value), path]
        self.exec(["/bin/sh", "-ec", "; ".join(script), "sh", *args])

    def nft(self, ruleset):
        """Loads an nftables ruleset (one atomic transaction) in this namespace."""
        self.exec(["nft", "-f", "-"], input=ruleset)

    def close(self):
        if os.path.exists(self.path):
            run([IP, "netns", "delete", self.name], check=False)
        if os.path.exists(self.path):
            raise CommandError(f"could not delete netns {self.name}")
        if self._token is not None:
            cleanup.unregister(self._token)
            self._token = None
