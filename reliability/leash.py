"""Run a program that dies with the process that started it (Linux), so no load generator,
platform or server outlives a test run that was itself killed.

    python -m reliability.leash PROGRAM [ARGS...]

Sets PR_SET_PDEATHSIG to SIGKILL, then replaces itself with PROGRAM (same pid). Where prctl is
not available it just runs PROGRAM.
"""
import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    parent = os.environ.pop("DIY_LEASH_PARENT", None)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if parent is not None and os.getppid() != int(parent):
        return 0  # the parent died before the leash was on
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
