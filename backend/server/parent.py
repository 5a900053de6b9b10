"""Whether the process that started the backend (`serve --parent-pid`) still runs. Standard library only; no bpy.

A launcher such as Blender passes its own pid, so that a backend it started does not outlive it, also after a crash.
POSIX (Linux, macOS): `os.kill(pid, 0)`, plus `os.getppid()` when the pid is this process's own parent, which also
catches a parent that died but was not yet reaped (a zombie answers `kill(pid, 0)`) and a pid reused by a new
process. Windows: OpenProcess + GetExitCodeProcess through ctypes; written to the documented API but not tested here
(no Windows machine), so treat it as untested.
"""

import ctypes
import os
import sys

# Windows API constants (processthreadsapi.h, winnt.h, minwinbase.h).
_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
_STILL_ACTIVE = 259
_ERROR_ACCESS_DENIED = 5


class ParentWatch:
    """Watches one process by pid; `alive()` turns False once it has exited, and stays False."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        # Our real parent can be checked without races: the kernel reparents us the moment it exits.
        self._is_our_parent = sys.platform != "win32" and os.getppid() == pid
        self._gone = False

    def alive(self) -> bool:
        if not self._gone:
            if self._is_our_parent:
                self._gone = os.getppid() != self.pid
            else:
                self._gone = not process_exists(self.pid)
        return not self._gone


def process_exists(pid: int) -> bool:
    """True while a process with this pid exists (pid must be positive: 0 and negatives mean process groups)."""
    if pid <= 0:
        raise ValueError(f"`pid` must be a positive process id, got {pid}")
    if sys.platform == "win32":
        return _windows_process_exists(pid)
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists and we may signal it
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to another user
    return True


def _windows_process_exists(pid: int) -> bool:
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        # Access denied means the process exists but is protected; anything else (invalid parameter) means gone.
        return ctypes.get_last_error() == _ERROR_ACCESS_DENIED  # type: ignore[attr-defined]
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True  # cannot tell; keep serving rather than stop a backend that may still be wanted
        return code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
