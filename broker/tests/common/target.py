"""Test target for memgated: a process whose memory is exported.

usage: target.py [--undumpable] [--exec-on-line]
Allows any process of its uid to ptrace it (PR_SET_PTRACER_ANY, so the tests also work
where Yama's ptrace_scope is 1; a no-op without Yama), optionally makes itself
non-dumpable (then even its own uid may not open its mem), prints "ready", then sleeps;
with --exec-on-line it execs `sleep 60` after reading a line from stdin.
"""
import ctypes
import os
import sys
import time

PR_SET_DUMPABLE = 4
PR_SET_PTRACER = 0x59616D61
PR_SET_PTRACER_ANY = ctypes.c_ulong(-1)

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0)
if "--undumpable" in sys.argv:
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.exit("PR_SET_DUMPABLE failed")
print("ready", flush=True)
if "--exec-on-line" in sys.argv:
    sys.stdin.readline()
    os.execvp("sleep", ["sleep", "60"])
time.sleep(60)
