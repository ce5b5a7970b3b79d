#!/usr/bin/python3
"""Runs a command under a seccomp profile in the format kubelet reads for `type: Localhost`
(the OCI runtime-spec form: defaultAction, defaultErrnoRet, syscalls[].names/action), the way
a container runtime applies it: compiled with libseccomp, loaded, then exec.

    seccomp_exec.py PROFILE.json COMMAND [ARG...]

Only what spindle's profile uses is supported: a default action of SCMP_ACT_ERRNO or
SCMP_ACT_ALLOW and unconditional SCMP_ACT_ALLOW / SCMP_ACT_ERRNO rules. Like runc, names this
architecture does not have are skipped. The filter is for the native architecture.
"""

import ctypes
import json
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000


def scmp_act_errno(err):
    return 0x00050000 | (err & 0xFFFF)


def action(name, errno_ret):
    if name == "SCMP_ACT_ALLOW":
        return SCMP_ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return scmp_act_errno(errno_ret)
    raise ValueError(f"action {name} is not supported here")


def load(profile):
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                     ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    errno_ret = profile.get("defaultErrnoRet", 1)
    default = action(profile["defaultAction"], errno_ret)
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise OSError("seccomp_init failed")
    for rule in profile.get("syscalls", []):
        if rule.get("args"):
            raise ValueError("conditional rules are not supported here")
        act = action(rule["action"], rule.get("errnoRet", errno_ret))
        if act == default:
            continue  # libseccomp refuses a rule that repeats the default
        for name in rule["names"]:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                continue  # not a system call of this architecture
            rc = lib.seccomp_rule_add(ctx, act, nr, 0)
            if rc != 0:
                raise OSError(-rc, f"seccomp_rule_add({name}): {os.strerror(-rc)}")
    rc = lib.seccomp_load(ctx)  # sets no_new_privs first, as allowPrivilegeEscalation: false
    if rc != 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    with open(argv[1]) as f:
        load(json.load(f))
    os.execvp(argv[2], argv[2:])
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
