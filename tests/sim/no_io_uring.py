#!/usr/bin/python3
"""Runs a command with io_uring refused, as a container runtime's seccomp profile refuses it
(Docker's default profile does): io_uring_setup, io_uring_enter and io_uring_register fail
with EPERM, every other system call is allowed.

    no_io_uring.py COMMAND [ARG...]

Plain seccomp through ctypes (stdlib only): PR_SET_NO_NEW_PRIVS, then a classic BPF filter
with PR_SET_SECCOMP, then exec. The filter is inherited by the command and its children.
"""

import ctypes
import errno
import os
import platform
import sys

PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000

BPF_LD_W_ABS = 0x20   # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15      # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06      # BPF_RET | BPF_K

# The io_uring calls have the same numbers on every architecture of the unified syscall
# table (Linux >= 5.1): x86_64, i386, aarch64, arm, riscv, ...
IO_URING_SETUP, IO_URING_ENTER, IO_URING_REGISTER = 425, 426, 427
ARCHES = {"x86_64", "aarch64", "riscv64", "ppc64le", "s390x"}


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def _program(err=errno.EPERM):
    refuse = SECCOMP_RET_ERRNO | (err & 0xFFFF)
    insns = [
        (BPF_LD_W_ABS, 0, 0, 0),                  # A = seccomp_data.nr
        (BPF_JEQ_K, 3, 0, IO_URING_SETUP),        # -> refuse
        (BPF_JEQ_K, 2, 0, IO_URING_ENTER),        # -> refuse
        (BPF_JEQ_K, 1, 0, IO_URING_REGISTER),     # -> refuse
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_RET_K, 0, 0, refuse),
    ]
    return (SockFilter * len(insns))(*[SockFilter(*i) for i in insns])


def install(err=errno.EPERM):
    """Installs the filter on the calling thread (and everything it execs or forks)."""
    if platform.machine() not in ARCHES:
        raise OSError(f"no_io_uring: architecture {platform.machine()} not known")
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"PR_SET_NO_NEW_PRIVS: {os.strerror(e)}")
    insns = _program(err)
    prog = SockFprog(len(insns), ctypes.cast(insns, ctypes.POINTER(SockFilter)))
    if prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"PR_SET_SECCOMP: {os.strerror(e)}")


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    install()
    os.execvp(argv[1], argv[1:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
