"""Cache files: two writers of one key, a folder that cannot be written, and what the purge removes."""

import os
import time

import torch
from safetensors.torch import load_file

from motionclone.backend.engine import cache_files
from motionclone.backend.engine.inversion import InversionCache, InvertedLatents
from motionclone.backend.engine.representation import RepresentationCache


def test_two_writers_of_one_key_both_finish_and_leave_one_whole_file(tmp_path, monkeypatch):
    """Two workers sharing a cache folder extract the same reference at once: the second one's write happens while
    the first one's file is still under its temporary name."""
    path = tmp_path / "key.safetensors"
    real_save = cache_files.save_file
    nested = []

    def interleaved(tensors, filename, metadata):
        real_save(tensors, filename, metadata=metadata)
        if not nested:  # the other worker writes the same key before this one renames its file
            nested.append(True)
            cache_files.save_atomically({"x": torch.full((2,), 2.0)}, path, {"writer": "second"})

    monkeypatch.setattr(cache_files, "save_file", interleaved)
    cache_files.save_atomically({"x": torch.full((2,), 1.0)}, path, {"writer": "first"})
    assert torch.equal(load_file(str(path))["x"], torch.full((2,), 1.0))  # the last rename wins, whole
    assert sorted(item.name for item in tmp_path.iterdir()) == ["key.safetensors"]  # no temporary file left


def test_a_cache_folder_that_cannot_be_written_costs_the_next_job_the_work_not_this_job(tmp_path, caplog):
    not_a_folder = tmp_path / "taken"
    not_a_folder.write_text("a file where the cache folder should be")
    inverted = InvertedLatents({999: torch.zeros(1, 4, 2, 2, 2)}, {})
    cache = InversionCache(not_a_folder / "inversion")
    cache.put("key", inverted)  # no exception: the job that computed it goes on
    assert cache.get("key") is inverted
    assert "could not keep the inverted reference in the cache folder" in caplog.text


def test_a_cache_file_whose_write_fails_midway_costs_the_job_nothing(tmp_path, monkeypatch, caplog):
    from safetensors import SafetensorError

    def disk_full(*args, **kwargs):  # how safetensors reports a failed write
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(cache_files, "save_file", disk_full)
    inverted = InvertedLatents({999: torch.zeros(1, 4, 2, 2, 2)}, {})
    cache = InversionCache(tmp_path / "inversion")
    cache.put("key", inverted)
    assert cache.get("key") is inverted and "No space left on device" in caplog.text


def test_the_purge_takes_old_inverted_references_and_half_written_files_too(tmp_path):
    old, recent = time.time() - 86400, time.time()
    files = {
        "inversion/old.safetensors": old,
        "inversion/recent.safetensors": recent,
        "stopped-writer.safetensors.123-456.partial": old,
        "writing-now.safetensors.123-789.partial": recent,
        ".tmpAb12Cd": old,  # safetensors' own temporary, left by a writer that stopped
        "notes.txt": old,
    }
    for name, when in files.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (when, when))
    RepresentationCache(tmp_path).purge_unused(3600)
    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert left == ["inversion/recent.safetensors", "notes.txt", "writing-now.safetensors.123-789.partial"]


def test_reading_an_inverted_reference_counts_as_a_use_for_the_purge(tmp_path):
    day_ago = time.time() - 86400
    InversionCache(tmp_path / "inversion").put("key", InvertedLatents({999: torch.zeros(1, 4, 2, 2, 2)}, {}))
    path = tmp_path / "inversion" / "key.safetensors"
    os.utime(path, (day_ago, day_ago))
    assert InversionCache(tmp_path / "inversion").get("key") is not None  # another process reads it from disk
    RepresentationCache(tmp_path).purge_unused(3600)
    assert path.is_file()


def test_the_memory_cache_keeps_representations_in_host_memory_not_on_the_gpu():
    """A worker's GPU keeps no cached representations between jobs: `put` remembers a CPU copy."""
    from motionclone.backend.engine.representation import MotionRepresentation

    moved_to = []

    class OnAnAccelerator(MotionRepresentation):  # this machine has no GPU: record where `put` moves it instead
        def to(self, device):
            moved_to.append(str(device))
            return super().to(device)

    extracted = OnAnAccelerator({"m": torch.ones(2, 1, 2, 1)}, {"m": torch.zeros(2, 1, 2, 1, dtype=torch.uint8)}, {})
    cache = RepresentationCache()
    cache.put("key", extracted)
    assert moved_to == ["cpu"]
    assert cache.get("key").values["m"].device.type == "cpu"
