"""Benchmark the wire protocol against a real backend process: large round trips, and small messages per second.

Usage:
    python scripts/bench_protocol.py [--repeats 10] [--seconds 2] [--frames 16 --height 512 --width 512]

Starts `python -m motionclone.backend serve --preset tiny --device cpu` on a free loopback port (the tiny preset
needs no download), connects the reference `Client`, and prints one JSON object:

- echo: a reference-sized video (16 x 512 x 512 RGB uint8, 12 MiB) sent to the server and back with Echo, timed by
  `Client.measure_round_trip` (which also checks that the bytes came back unchanged); median of --repeats.
- copy: the same bytes copied in memory with `ndarray.copy()`, median of --repeats; `ratio` is echo / copy.
- small: back-to-back Echo messages without data for about --seconds: round trips per second as one caller sees
  them (each waits for its answer), and with up to --window requests in flight.

The server is stopped with SIGTERM at the end, as an operator would stop it.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from motionclone.backend.process import BackendProcess
from motionclone.protocol.client import Client

MIB = 1024 * 1024


def median_seconds(action: Any, repeats: int) -> tuple[float, list[float]]:
    """Median and all timings of `action()`, which returns its own duration in seconds."""
    timings = [action() for _ in range(repeats)]
    return statistics.median(timings), timings


def time_copy(frames: np.ndarray) -> float:
    started = time.perf_counter()
    copy = frames.copy()
    elapsed = time.perf_counter() - started
    del copy
    return elapsed


def sequential_round_trips(client: Client, seconds: float) -> tuple[list[float], float]:
    """Empty Echo, one at a time, for about `seconds`: (each round trip in seconds, elapsed seconds)."""
    timings: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        timings.append(client.measure_round_trip(b"", timeout=10.0))
    return timings, time.perf_counter() - started


def pipelined_round_trips(client: Client, seconds: float, window: int) -> tuple[int, float]:
    """Empty Echo with up to `window` in flight, for about `seconds`: (answers received, elapsed seconds)."""
    in_flight: set[str] = set()
    answered = 0
    started = time.perf_counter()
    while True:
        running = time.perf_counter() - started < seconds
        while running and len(in_flight) < window:
            in_flight.add(client.echo(b""))
        if not in_flight:
            break
        event = client.next_event(timeout=10.0)
        if event is None:
            raise TimeoutError(f"{len(in_flight)} echoes were not answered within 10 s")
        if event.kind == "echo" and event.request_id in in_flight:
            in_flight.discard(event.request_id)
            answered += 1
    return answered, time.perf_counter() - started


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "msgpack": ".".join(str(part) for part in msgpack.version),
        "numpy": np.__version__,
        "transport": "tcp loopback (127.0.0.1)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats of the large echo and the copy")
    parser.add_argument("--seconds", type=float, default=2.0, help="how long to send small messages, per mode")
    parser.add_argument("--window", type=int, default=32, help="small messages in flight in the pipelined mode")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    args = parser.parse_args()

    frames = np.random.default_rng(0).integers(0, 256, size=(args.frames, args.height, args.width, 3), dtype=np.uint8)
    payload_mib = frames.nbytes / MIB
    with tempfile.TemporaryDirectory(prefix="motionclone-bench-") as folder:
        backend = BackendProcess.start(Path(folder) / "results")
        endpoint = backend.endpoint
        try:
            with Client(endpoint, client_name="bench_protocol") as client:
                welcome = client.wait_connected(timeout=30.0)
                for _ in range(2):  # warm up: first-use allocations on both sides
                    client.measure_round_trip(frames, timeout=60.0)
                echo_s, echo_all = median_seconds(lambda: client.measure_round_trip(frames, timeout=60.0), args.repeats)
                copy_s, copy_all = median_seconds(lambda: time_copy(frames), args.repeats)
                small_all, elapsed = sequential_round_trips(client, args.seconds)
                pipelined, pipelined_elapsed = pipelined_round_trips(client, args.seconds, args.window)
        finally:
            exit_code = backend.stop()

    report = {
        "machine": machine(),
        "server": {"endpoint": endpoint, "device": welcome.device, "version": welcome.server_version},
        "payload": {"shape": list(frames.shape), "dtype": "uint8", "bytes": frames.nbytes, "mib": payload_mib},
        "repeats": args.repeats,
        "echo_round_trip_s": {"median": echo_s, "min": min(echo_all), "max": max(echo_all)},
        "memory_copy_s": {"method": "numpy.ndarray.copy", "median": copy_s, "min": min(copy_all), "max": max(copy_all)},
        "echo_over_copy_ratio": echo_s / copy_s,
        # The payload crosses the link twice per round trip; this counts it once (what a Result delivery costs).
        "echo_throughput_mib_s": payload_mib / echo_s,
        "small_messages": {
            "message": "Echo without data",
            # Bimodal: a request the client's I/O thread picks up at once, or one that waits for its next poll
            # (POLL_INTERVAL, 20 ms); the rate follows the mean, not the median.
            "sequential_round_trips_per_s": len(small_all) / elapsed,
            "sequential_round_trip_ms": {
                "median": statistics.median(small_all) * 1000.0,
                "mean": statistics.fmean(small_all) * 1000.0,
                "min": min(small_all) * 1000.0,
                "max": max(small_all) * 1000.0,
            },
            "sequential_count": len(small_all),
            "pipelined_window": args.window,
            "pipelined_round_trips_per_s": pipelined / pipelined_elapsed,
            "pipelined_count": pipelined,
            "seconds_each": args.seconds,
        },
        "server_exit_code": exit_code,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
