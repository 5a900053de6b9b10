"""Result frames written on a thread of their own, so that Blender stays responsive while they go to disk. No torch.

A long result is hundreds of PNGs, each compressed and synced to disk: seconds to tens of seconds. The pump starts
a `ResultWrite` when a result arrives and places the strip once it is done; nothing here touches Blender data.
"""

import threading
from pathlib import Path
from typing import Any

from . import result_files


class ResultWrite:
    """The frames of one result event being written into a new folder under `output_root`.

    Attributes:
        event: the result event (its frames are a view of the received message, kept alive by it).
        request_id, job_id: the job the result belongs to, to find it again once written (undo may have replaced it).
        recovered: the job was in no list when the result came, and the pump made an entry for it.
        folder: the written folder, once done without error.
        error: what stopped the write, if anything.
    """

    def __init__(self, event: Any, request_id: str, output_root: Path, base_name: str, recovered: bool) -> None:
        self.event = event
        self.request_id = request_id
        self.job_id: str = event.job_id
        self.recovered = recovered
        self.folder: Path | None = None
        self.error: Exception | None = None
        self._output_root, self._base_name = output_root, base_name
        self._thread = threading.Thread(target=self._write, name="motionclone-result-writer", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until written (the add-on disabled, Blender closing); True when done."""
        self._thread.join(timeout)
        return self.done

    def _write(self) -> None:
        try:
            self.folder = result_files.write_result_frames(self._output_root, self._base_name, self.event.frames())
        except Exception as error:  # reported on the job by the pump, on the main thread
            self.error = error
