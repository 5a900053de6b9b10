"""The same job in one process (`motionclone generate`) and through a server (`motionclone serve` and a client).

Usage:
    python scripts/bench_server.py [--preset blocks] [--steps 20] [--guidance-steps 10] [--runs 2]

Both sides get the same reference (a synthetic moving square, lossless PNG frames), prompt, seed and parameters, on
the CPU. Each side runs the job --runs times; the server's first run is its warm-up, and so is the first run of
`generate` (a process of its own each time, so it pays its start every time). The denoising time comes from each
result's metadata (`timings_s.denoise`), so model loading and transfers stay out of it. Prints one JSON object with
both sides' times and `ratio`: server denoise / in-process denoise (1.0 means the server adds nothing).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from motionclone.backend.info import cpu_model_name
from motionclone.backend.process import BackendProcess
from motionclone.backend.samples import make_moving_square_clip
from motionclone.backend.video_io import write_png_sequence
from motionclone.protocol.client import Client

PROMPT = "a red ball rolling on grass under a blue sky"


def in_process(reference: Path, out: Path, args: argparse.Namespace) -> float:
    """Denoising seconds of one `motionclone generate` run."""
    command = [
        sys.executable, "-m", "motionclone.backend", "generate", "--preset", args.preset, "--device", "cpu",
        "--reference", str(reference), "--prompt", PROMPT, "--out", str(out), "--overwrite",
        "--steps", str(args.steps), "--guidance-steps", str(args.guidance_steps), "--seed", "2025",
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "result.json").read_text())["timings_s"]["denoise"]


def through_server(frames: Any, results_dir: Path, args: argparse.Namespace) -> list[float]:
    """Denoising seconds of each of --runs jobs on one `motionclone serve` process."""
    params = {
        "prompt": PROMPT,
        "num_inference_steps": args.steps,
        "guidance_steps": args.guidance_steps,
        "seed": 2025,
    }
    backend = BackendProcess.start(results_dir, preset=args.preset, device="cpu", timeout=300)
    try:
        with Client(backend.endpoint).start() as client:
            client.wait_connected(300)
            times = []
            for _ in range(args.runs):
                event = client.run_job(frames, params, timeout=1800)
                client.ack(event.job_id)
                times.append(event.message.metadata["timings_s"]["denoise"])
            return times
    finally:
        backend.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="blocks", help="model preset (default blocks, the built-in model)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    parser.add_argument("--guidance-steps", type=int, default=10, help="motion-guided steps (default 10)")
    parser.add_argument("--runs", type=int, default=2, help="jobs per side; the first is a warm-up (default 2)")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error(f"--runs must be at least 2 (the first run is a warm-up), got {args.runs}")
    frames = make_moving_square_clip(num_frames=16, height=64, width=64)
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        write_png_sequence(frames, work_dir / "reference")
        generate_times = [in_process(work_dir / "reference", work_dir / f"out-{run}", args) for run in range(args.runs)]
        server_times = through_server(frames, work_dir / "results", args)
    measured_generate = sum(generate_times[1:]) / (args.runs - 1)
    measured_server = sum(server_times[1:]) / (args.runs - 1)
    report = {
        "generate_denoise_s": [round(seconds, 2) for seconds in generate_times],
        "server_denoise_s": [round(seconds, 2) for seconds in server_times],
        "ratio": round(measured_server / measured_generate, 3),
        "settings": {"preset": args.preset, "steps": args.steps, "guidance_steps": args.guidance_steps},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": cpu_model_name()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
