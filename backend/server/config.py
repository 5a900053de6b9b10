"""Server settings, built by the CLI and passed to `Server`. No bpy."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...protocol.codec import Limits
from ...protocol.endpoints import DEFAULT_ENDPOINT


@dataclass(frozen=True)
class ServerConfig:
    """Everything `motionclone serve` can set.

    Attributes:
        bind: ZeroMQ endpoint to bind; anything but loopback needs `keys_dir` or `insecure`.
        preset: model preset loaded at start and used when a job names none.
        preset_options: options for that preset (weight sources).
        device, dtype: where and how the models run (dtype None: the preset's default).
        results_dir: finished results live here until acknowledged or older than `retention_s`.
        keys_dir: CurveZMQ keys written by `motionclone keygen` (server.key_secret, clients/*.key).
        insecure: allow a non-loopback bind without keys.
        retention_s: how long an unacknowledged result is kept.
        heartbeat_interval: announced to clients; they ping at this rate.
        max_queue: queued jobs beyond this are refused with `queue_full`.
        max_queued_bytes: the reference and condition frames that waiting jobs may hold together; a job that would
            take them past it is refused with `queue_full`, unless the queue is empty.
        preview_every: send a preview image every this many denoising steps (0: never).
        limits: message and size limits, enforced before decoding payloads.
        parent_pid: stop cleanly (as on SIGTERM) once the process with this pid has exited; None: run on its own.
        workers: "local" runs jobs on a thread in this process (one at a time); "ray" starts a local Ray instance and
            runs them on a pool of Ray actors; "ray:auto" or "ray:HOST:PORT" connects to a running Ray cluster.
        ray_workers: the pool's size; None: the cluster's GPU count (device cuda) or 1 (device cpu).
        ray_cpus_per_worker: CPUs each Ray actor reserves when the device is the CPU.
        state_file: once listening, write where and what this server runs here (JSON, see `state_file.py`); it is
            removed again on a clean stop. None: no file.
    """

    bind: str = DEFAULT_ENDPOINT
    preset: str = "sd15-animatediff-v3"
    preset_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str | None = None
    results_dir: Path = Path("motionclone-results")
    keys_dir: Path | None = None
    insecure: bool = False
    retention_s: float = 24 * 3600.0
    heartbeat_interval: float = 1.0
    max_queue: int = 64
    max_queued_bytes: int = 4 << 30
    preview_every: int = 5
    limits: Limits = field(default_factory=Limits)
    parent_pid: int | None = None
    state_file: Path | None = None
    workers: str = "local"
    ray_workers: int | None = None
    ray_cpus_per_worker: float = 1.0

    @property
    def ray_address(self) -> str | None:
        """The cluster address of `workers` "ray:ADDRESS"; None for plain "ray" (a local instance)."""
        _, _, address = self.workers.partition(":")
        return address or None
