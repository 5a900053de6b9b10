"""Jobs per minute with 1 and with 2 Ray worker actors on this machine, and their ratio.

Usage:
    python scripts/bench_workers.py [--jobs 6] [--steps 4] [--frames 8 --height 64 --width 64] [--cpus-per-worker 1]

For each pool size it starts `motionclone serve --preset tiny --device cpu --workers ray --ray-workers N` on a free
loopback port (a local Ray instance; the tiny preset needs no download), submits --jobs jobs at once from one client,
times from the first submit to the last result (after one warm-up job per worker, so that no actor's
first-call costs are timed), stops the server with SIGTERM and prints one JSON object:
{"1": {"jobs_per_minute": ...}, "2": {...}, "ratio": jobs_per_minute(2) / jobs_per_minute(1), ...}.
On a machine with fewer cores than 2 x --cpus-per-worker the two actors share cores, so expect a ratio below 2.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from motionclone.backend.process import BackendProcess
from motionclone.backend.samples import make_moving_square_clip
from motionclone.protocol.client import Client


def wait_results(client: Client, count: int) -> None:
    """Wait until `count` jobs have sent their result, acknowledging each."""
    results = 0
    while results < count:
        event = client.next_event(600)
        if event is None:
            raise RuntimeError("no event for 600 s; is the server still running?")
        if event.kind == "error":
            raise RuntimeError(f"a job failed: {event.message}")
        if event.kind == "result":
            results += 1
            client.ack(event.job_id)


def run_jobs(endpoint: str, workers: int, count: int, params: dict[str, Any], frames: Any) -> float:
    """Warm up every worker, then submit `count` jobs at once and return the seconds until the last result arrived."""
    with Client(endpoint).start() as client:
        client.wait_connected(300)
        # One warm-up job per worker, submitted together so that each actor takes one: a worker's first-call costs
        # would otherwise fall into the timed jobs.
        for seed in range(workers):
            client.submit(frames, {**params, "seed": 999 - seed})
        wait_results(client, workers)
        started = time.monotonic()
        for seed in range(count):
            client.submit(frames, {**params, "seed": seed})
        wait_results(client, count)
        return time.monotonic() - started


def bench_pool(size: int, args: argparse.Namespace, params: dict[str, Any], frames: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as results_dir:
        extra = ("--workers", "ray", "--ray-workers", str(size), "--ray-cpus-per-worker", str(args.cpus_per_worker))
        backend = BackendProcess.start(Path(results_dir), bind="tcp://127.0.0.1:*", extra_args=extra, timeout=300)
        try:
            seconds = run_jobs(backend.endpoint, size, args.jobs, params, frames)
        finally:
            backend.stop()
    per_minute = 60 * args.jobs / seconds
    return {"workers": size, "jobs": args.jobs, "seconds": round(seconds, 2), "jobs_per_minute": per_minute}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    args = parser.parse_args()
    params = {
        "prompt": "a fox",
        "num_frames": args.frames,
        "height": args.height,
        "width": args.width,
        "num_inference_steps": args.steps,
        "guidance_steps": min(2, args.steps),
        "warm_up_steps": 1,
        "cool_down_steps": 1,
    }
    frames = make_moving_square_clip(num_frames=args.frames, height=args.height, width=args.width)
    report: dict[str, Any] = {str(size): bench_pool(size, args, params, frames) for size in (1, 2)}
    report["ratio"] = round(report["2"]["jobs_per_minute"] / report["1"]["jobs_per_minute"], 3)
    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "preset": "tiny", "device": "cpu"}
    for size in ("1", "2"):
        report[size]["jobs_per_minute"] = round(report[size]["jobs_per_minute"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
