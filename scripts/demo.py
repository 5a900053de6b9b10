"""The main job in one command: an animated Blender blockout becomes a text-prompted video, through the add-on.

Usage: python scripts/demo.py [--scene object|camera] [--out DIR] [--prompt TEXT] [--seed N]
                              [--small | --official] [--server ENDPOINT | --preset NAME --device DEVICE]

Runs real Blender as a Python module (bpy) with the add-on enabled from this checkout, and does what a user does in
the panel: builds a blockout clip (`blender_addon.demo_scene`), starts a backend process (`motionclone serve`, the
built-in trained `blocks` model on the CPU unless told otherwise; or uses the one at --server), presses Generate
(`blender_addon.jobs.start_job`: renders the reference with Workbench and submits it) and lets the add-on's pump
bring the result into the Video Sequencer. Blender's timers never fire in background mode, so the pump is called
here in a loop. Then it writes into --out (default demo-output/):

    demo.blend       the scene with the result strip in the sequencer
    reference.mp4    the reference the job used, with its frames in reference/
    result.mp4       the generated video, with its frames in results/<prompt>-<seed>/
    comparison.png   reference frames (top row) above result frames (bottom row)
    parameters.json  every parameter sent to the backend, the sampled frames, job id and timings

Sizes: the default runs the preset at its native size with its config: for the built-in `blocks` model 16 frames
at 64 x 64 with the `blocks` config (40 steps, 20 guided), a few minutes at most on a 2-core CPU; --small (8 frames
at 64 x 64, 2 steps, 1 guided) is a quick check; --official (16 frames at 512 x 512, the official config's 300 or 100
steps) is for real weights on a GPU. The `blocks` model knows only its training world (coloured balls, cubes,
figures and cars on grass, snow, desert, night, water or a grey blockout floor), so the default prompts stay in it.
The random `tiny` model (--preset tiny: 16 frames at 128 x 128, 8 steps) draws noise; it shows that every step works.

Exit codes: 0 success, 1 the demo failed (the message says why), 2 bad arguments, 130 interrupted.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy

from motionclone.backend.comparison import comparison_sheet, write_png
from motionclone.backend.errors import MotionCloneError
from motionclone.backend.process import BackendProcess
from motionclone.backend.video_io import read_clip, write_mp4
from motionclone.protocol.client import Client
from motionclone.protocol.endpoints import is_loopback_endpoint
from motionclone.protocol.errors import BackendUnavailable

# The add-on is enabled from this checkout, as `blender_addon`. Its modules are imported only once it is enabled:
# Blender reloads an add-on package that was imported before `addon_utils.enable`.
ROOT = Path(__file__).resolve().parents[1]
ADDON = "blender_addon"
# One default prompt per blockout kind (`blender_addon.demo_scene.SCENE_KINDS`, which checks the name): for the
# built-in blocks model, sentences of its caption grammar; for real weights, anything.
DEFAULT_PROMPTS = {
    "object": "a knight in armour walking through a misty forest, cinematic",
    "camera": "ancient stone ruins in a misty forest at dawn, cinematic",
}
BLOCKS_PROMPTS = {
    "object": "a red figure walking right in a grey blockout room",
    "camera": "a yellow cube resting in the snow as the camera pans right",
}
DEFAULT_PRESET = "blocks"
BACKEND_START_TIMEOUT_S = 180.0
BACKEND_STOP_TIMEOUT_S = 30.0
CONNECTION_TIMEOUT_S = 15.0
JOB_TIMEOUT_S = 3600.0
PUMP_SLEEP_S = 0.1
FINISHED_STATES = ("DONE", "FAILED", "CANCELLED")
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Size:
    """How big a run is. ``steps`` None sends no override: the config's official step counts are used."""

    frames: int
    long_side: int
    steps: int | None
    guidance_steps: int | None


SIZES = {
    "small": Size(frames=8, long_side=64, steps=2, guidance_steps=1),
    "default": Size(frames=16, long_side=128, steps=8, guidance_steps=4),
    "official": Size(frames=16, long_side=512, steps=None, guidance_steps=None),
    "blocks": Size(frames=16, long_side=64, steps=None, guidance_steps=None),  # native size, `blocks` config
}


class DemoFailed(RuntimeError):
    """A stage of the demo could not finish; the message says which and why."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Animate a Blender blockout, send it through the MotionClone add-on, and write the result.",
    )
    parser.add_argument("--scene", choices=tuple(DEFAULT_PROMPTS), default="object", help="object or camera motion")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default demo-output/)")
    parser.add_argument("--prompt", help="what the new video shows (default: one that suits the scene)")
    parser.add_argument("--seed", type=int, default=2025, help="seed (default 2025)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="8 frames at 64x64, 2 steps: a quick check")
    size.add_argument("--official", action="store_true", help="16 frames at 512x512, the official step counts")
    parser.add_argument("--server", help="use the backend running at this endpoint instead of starting one")
    parser.add_argument(
        "--preset", help=f"model preset of the backend the demo starts (default {DEFAULT_PRESET}, the built-in model)"
    )
    parser.add_argument("--device", help="device of the backend the demo starts (default cpu)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.server and (args.preset or args.device):
        parser.error("--preset and --device configure the backend the demo starts; with --server, give them to it")
    if args.server and not is_loopback_endpoint(args.server):
        # Blender as a Python module has online access off, so the add-on reaches loopback backends only.
        parser.error(
            f"--server {args.server}: the demo reaches a backend on this computer only; forward a remote one, for "
            "example `ssh -N -L 5555:127.0.0.1:5555 gpu-box`, then use --server tcp://127.0.0.1:5555"
        )
    out = args.out.expanduser().resolve()
    preset, device = args.preset or DEFAULT_PRESET, args.device or "cpu"
    if args.server:  # its model decides the prompt, size and config that suit it
        try:
            preset = served_preset(args.server)
        except (BackendUnavailable, ValueError) as error:
            print(f"demo failed: the backend at {args.server} did not answer: {error}", file=sys.stderr)
            return EXIT_FAILED
    blocks = preset == "blocks"
    size = SIZES["small" if args.small else "official" if args.official else "blocks" if blocks else "default"]
    prompt = args.prompt or (BLOCKS_PROMPTS if blocks else DEFAULT_PROMPTS)[args.scene]
    config = "blocks" if blocks else args.scene
    timings: dict[str, float] = {}
    backend: BackendProcess | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="motionclone-demo-backend-") as backend_results:
            try:
                with stage(timings, "scene"):
                    scene = prepare_scene(args.scene, size, prompt, args.seed, config)
                if args.server:
                    endpoint = args.server
                else:
                    with stage(timings, "backend start"):
                        backend = BackendProcess.start(
                            Path(backend_results),
                            preset,
                            device,
                            extra_args=("--preview-every", "0"),
                            timeout=BACKEND_START_TIMEOUT_S,
                        )
                    endpoint = backend.endpoint
                    print(f"  backend {preset} on {device} at {endpoint}", flush=True)
                set_preferences(endpoint, out / "results")
                with stage(timings, "render+submit"), quiet_stdout():
                    job = start_job(scene)
                with stage(timings, "generate"):
                    wait_for_job(scene, backend)
                with stage(timings, "write"):
                    paths = write_outputs(scene, out, args.scene, timings)
            finally:
                close_session()
                if backend is not None:
                    backend.stop(BACKEND_STOP_TIMEOUT_S)
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (DemoFailed, MotionCloneError, RuntimeError, ValueError, OSError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print_summary(paths, job, timings, preset)
    return 0


def served_preset(endpoint: str) -> str:
    """The model preset of the backend at `endpoint`, from its welcome: a `motionclone serve` on a CPU runs the
    built-in blocks model, whose prompts, size and config differ from real weights'."""
    client = Client(endpoint, client_name="motionclone-demo").start()
    try:
        welcome = client.wait_connected(CONNECTION_TIMEOUT_S)
    finally:
        client.close()
    print(f"  backend {welcome.default_preset} on {welcome.device} at {endpoint}", flush=True)
    return welcome.default_preset


# ---- stages --------------------------------------------------------------------------------------------------------
@contextmanager
def stage(timings: dict[str, float], name: str) -> Iterator[None]:
    """Time a stage into ``timings`` and say when it starts and ends."""
    print(f"[{name}] ...", flush=True)
    started = time.monotonic()
    yield
    timings[name] = time.monotonic() - started
    print(f"[{name}] done in {timings[name]:.1f} s", flush=True)


def prepare_scene(kind: str, size: Size, prompt: str, seed: int, config: str) -> bpy.types.Scene:
    """An empty Blender with the add-on enabled, the blockout built, and the panel's settings filled in."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    enable_addon()
    from blender_addon import demo_scene

    scene = bpy.context.scene
    demo_scene.build_blockout_scene(scene, kind, size.frames)
    settings = scene.motionclone
    settings.prompt = prompt
    settings.config = config  # the scene kinds are named after the official configs; blocks has its own
    settings.seed = seed
    settings.num_frames = size.frames
    settings.long_side = size.long_side
    settings.use_scene_range = True
    settings.source = "CAMERA"
    settings.render_engine = "WORKBENCH"
    settings.use_advanced = size.steps is not None
    if size.steps is not None:
        settings.steps = size.steps
        settings.guidance_steps = size.guidance_steps
    return scene


def enable_addon() -> None:
    """Enable the add-on of this checkout, as `blender_addon.register` would be called by Blender."""
    import addon_utils

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    addon_utils.enable(ADDON, default_set=True, handle_error=raise_addon_error)
    if ADDON not in bpy.context.preferences.addons:
        raise DemoFailed(f"Blender did not enable the add-on '{ADDON}' from {ROOT}.")


def start_job(scene: bpy.types.Scene) -> Any:
    """Press Generate: the add-on renders the reference and submits it. Returns the job item."""
    from blender_addon import jobs

    return jobs.start_job(bpy.context, scene)


def close_session() -> None:
    """Close the add-on's protocol client (its thread), if the add-on got as far as opening one."""
    if ADDON in sys.modules:
        from blender_addon import session

        session.close_session()


def raise_addon_error(error: BaseException) -> None:
    raise DemoFailed(f"Blender could not enable the add-on '{ADDON}': {error}") from error


def set_preferences(endpoint: str, results: Path) -> None:
    preferences = bpy.context.preferences.addons[ADDON].preferences
    preferences.endpoint = endpoint
    preferences.output_dir = str(results)
    preferences.timeout = CONNECTION_TIMEOUT_S


def wait_for_job(scene: bpy.types.Scene, backend: BackendProcess | None) -> None:
    """Pump the add-on's events until the scene's last job finished, printing each new job message."""
    from blender_addon import event_pump

    deadline = time.monotonic() + JOB_TIMEOUT_S
    shown = ""
    while True:
        event_pump.pump()
        job = scene.motionclone.jobs[-1]
        if job.message != shown:
            shown = job.message
            print(f"  {shown}", flush=True)
        if job.state in FINISHED_STATES:
            break
        if backend is not None and backend.process.poll() is not None:
            raise DemoFailed(
                f"The backend process exited with code {backend.process.returncode} during the job:\n{backend.output()}"
            )
        if time.monotonic() > deadline:
            raise DemoFailed(f"The job did not finish within {JOB_TIMEOUT_S:.0f} s; its last message: {shown}")
        time.sleep(PUMP_SLEEP_S)
    if job.state != "DONE":
        raise DemoFailed(f"The job {'was cancelled' if job.state == 'CANCELLED' else 'failed'}: {job.message}")


def write_outputs(scene: bpy.types.Scene, out: Path, kind: str, timings: dict[str, float]) -> dict[str, Path]:
    """Write reference.mp4, result.mp4, comparison.png, parameters.json and demo.blend; returns their paths."""
    from blender_addon import reference

    job = scene.motionclone.jobs[-1]
    params = json.loads(job.params_json)
    frames = json.loads(job.sampled_frames)
    # The same frames, size and engine that start_job rendered: Workbench renders them identically again.
    with quiet_stdout():
        reference_frames = reference.render_camera_frames(
            scene, frames, params["width"], params["height"], scene.motionclone.render_engine, out / "reference"
        )
    result_frames = read_clip(job.result_dir).frames
    paths = {
        "demo.blend": out / "demo.blend",
        "reference.mp4": write_mp4(reference_frames, out / "reference.mp4", fps=params["fps"]),
        "result.mp4": write_mp4(result_frames, out / "result.mp4", fps=params["fps"]),
        "comparison.png": write_png(out / "comparison.png", comparison_sheet(reference_frames, result_frames)),
        "parameters.json": out / "parameters.json",
    }
    record = {
        "scene": kind,
        "parameters": params,
        "sampled_frames": frames,
        "job_id": job.job_id,
        "result_frames": job.result_dir,
        "strip": job.strip_name,
        "timings_s": {name: round(seconds, 2) for name, seconds in timings.items()},
    }
    paths["parameters.json"].write_text(json.dumps(record, indent=2) + "\n")
    with quiet_stdout():
        saved = bpy.ops.wm.save_as_mainfile(filepath=str(paths["demo.blend"]), copy=True)
    if "FINISHED" not in saved or not paths["demo.blend"].is_file():
        raise DemoFailed(f"Blender could not save {paths['demo.blend']}.")
    return paths


def print_summary(paths: dict[str, Path], job: Any, timings: dict[str, float], preset: str | None) -> None:
    print(f"\nResult strip '{job.strip_name}' is in the sequencer of demo.blend. Files:")
    for name, path in paths.items():
        print(f"  {name:<16} {path}")
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    print(f"Timings: {stages}; total {sum(timings.values()):.1f} s")
    if preset == "blocks":
        print(
            "The result comes from the built-in blocks model (64 x 64, trained by scripts/train_blocks_model.py on "
            "procedural clips); docs/training.md says what it can and cannot do yet. Real weights on a GPU: README.md."
        )
    if preset == "tiny":
        print(
            "Note: the tiny preset has random weights, so result.mp4 looks like noise; it shows that every step "
            "works. README.md, 'Real weights on a GPU', says how to get real pictures."
        )


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence Blender's own per-frame lines ("Saved: ...") on the process's stdout; errors still raise."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            try:
                yield
            finally:
                os.dup2(saved, 1)
    finally:
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
