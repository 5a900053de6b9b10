"""The `--state-file` record: written atomically, removed only while it names this process."""

import json
import os

import pytest

from motionclone.backend.server.state_file import (
    StateFileError,
    remove_state_file,
    state_record,
    write_state_file,
)


def test_write_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "nested" / "backend.json"
    write_state_file(path, {"endpoint": "tcp://127.0.0.1:1", "pid": 1})
    write_state_file(path, {"endpoint": "tcp://127.0.0.1:2", "pid": 2})
    assert json.loads(path.read_text()) == {"endpoint": "tcp://127.0.0.1:2", "pid": 2}
    assert list(path.parent.iterdir()) == [path]


def test_record_names_this_process_and_an_absolute_results_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = state_record("tcp://127.0.0.1:5", "0.1.0", "tiny", "cpu", "results", parent_pid=77)
    assert record["pid"] == os.getpid() and record["parent_pid"] == 77
    assert record["results_dir"] == str(tmp_path / "results")
    keys = {"endpoint", "pid", "server_version", "preset", "device", "results_dir", "started_at", "parent_pid"}
    assert set(record) == keys


def test_remove_deletes_only_a_file_that_names_this_pid(tmp_path):
    path = tmp_path / "backend.json"
    write_state_file(path, {"pid": 12345})
    assert not remove_state_file(path, 54321)
    assert path.exists()
    assert remove_state_file(path, 12345)
    assert not path.exists()
    assert not remove_state_file(path, 12345)  # already gone: nothing to do


def test_remove_leaves_a_file_it_cannot_read(tmp_path):
    path = tmp_path / "backend.json"
    path.write_text("not json")
    assert not remove_state_file(path, os.getpid())
    assert path.read_text() == "not json"


def test_an_unwritable_place_raises_naming_the_flag(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateFileError, match="`--state-file`"):
        write_state_file(blocker / "backend.json", {"pid": 1})
