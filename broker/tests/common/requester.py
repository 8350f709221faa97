"""Test requester for memgated: runs as an unprivileged uid (the test starts it with
setuid/setgid), opens the fds an Export carries *itself* (so the kernel's ptrace check
applies to this uid), connects to a SOCK_SEQPACKET socket and sends one frame with them.

usage: requester.py SOCKET TARGET_PID FDS FRAME_FILE [--wait]
FDS: comma list of pidfd | pidfd:PID | mem | memrw | memwo | mem:PID | maps | maps:PID |
     selfmem | selfmaps |
     selfpidfd | devnull | none. --wait: after opening the fds, print "opened" and wait
for a line on stdin before sending (to let the test kill the target in between).
Prints one JSON line: {"open_error": ...} (exit 3) or {"reply_hex": ...}.
"""
import json
import os
import socket
import sys


def open_fd(spec, target):
    name, _, arg = spec.partition(":")
    pid = int(arg) if arg else target
    if name == "pidfd":
        return os.pidfd_open(pid)
    if name == "selfpidfd":
        return os.pidfd_open(os.getpid())
    if name == "mem":
        return os.open("/proc/%d/mem" % pid, os.O_RDONLY)
    if name == "memrw":
        return os.open("/proc/%d/mem" % pid, os.O_RDWR)
    if name == "memwo":
        return os.open("/proc/%d/mem" % pid, os.O_WRONLY)
    if name == "maps":
        return os.open("/proc/%d/maps" % pid, os.O_RDONLY)
    if name == "selfmaps":
        return os.open("/proc/self/maps", os.O_RDONLY)
    if name == "selfmem":
        return os.open("/proc/self/mem", os.O_RDONLY)
    if name == "devnull":
        return os.open("/dev/null", os.O_RDONLY)
    raise SystemExit("unknown fd spec " + spec)


def main():
    path, target, fds_spec, frame_file = sys.argv[1:5]
    with open(frame_file, "rb") as f:
        frame = f.read()
    wait = "--wait" in sys.argv[5:]
    target = int(target)
    fds = []
    for spec in fds_spec.split(","):
        if spec == "none" or not spec:
            continue
        try:
            fds.append(open_fd(spec, target))
        except OSError as e:
            print(json.dumps({"open_error": "%s: %s" % (spec, e), "errno": e.errno}), flush=True)
            sys.exit(3)
    if wait:
        print("opened", flush=True)
        sys.stdin.readline()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(20)
    s.connect(path)
    socket.send_fds(s, [frame], fds)
    reply = s.recv(1 << 20)
    print(json.dumps({"reply_hex": reply.hex()}), flush=True)


main()
