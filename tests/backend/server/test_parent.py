"""`--parent-pid`: noticing that the launching process has exited (POSIX here; the Windows branch is untested)."""

import os
import subprocess

import pytest

from motionclone.backend.server.parent import ParentWatch, process_exists


def test_a_running_process_exists_and_a_reaped_one_does_not():
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert process_exists(child.pid)
        watch = ParentWatch(child.pid)
        assert watch.alive()
    finally:
        child.kill()
        child.wait()
    assert not process_exists(child.pid)
    assert not watch.alive()


def test_once_gone_a_watched_process_stays_gone_even_if_its_pid_is_reused(monkeypatch):
    child = subprocess.Popen(["true"])
    child.wait()
    watch = ParentWatch(child.pid)
    assert not watch.alive()
    monkeypatch.setattr("motionclone.backend.server.parent.process_exists", lambda pid: True)
    assert not watch.alive()


def test_our_own_parent_is_alive():
    assert ParentWatch(os.getppid()).alive()


@pytest.mark.parametrize("pid", [0, -1])
def test_pids_that_name_process_groups_are_refused(pid):
    with pytest.raises(ValueError, match="positive process id"):
        process_exists(pid)
