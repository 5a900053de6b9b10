"""The main job end to end: `scripts/demo.py --small` in a subprocess, and the files it writes.

Blender is only used in child processes here (the demo itself, and short scripts that open its .blend or build the
blockout), so this module never changes the bpy state other tests in the same process rely on.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from motionclone.backend.comparison import comparison_sheet, write_png
from motionclone.backend.errors import ParameterError
from motionclone.backend.video_io import read_clip
from tests.script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "scripts" / "demo.py"
DEMO_TIMEOUT_S = 300
SMALL_FRAMES, SMALL_SIZE = 8, 64  # what --small asks for
TILE, GAP, COLUMNS = 128, 4, 8  # comparison_sheet's defaults
OUTPUTS = ("demo.blend", "reference.mp4", "result.mp4", "comparison.png", "parameters.json")

INSPECT_BLEND = """
import json, sys
import bpy
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
strips = [strip for strip in scene.sequence_editor.strips_all if strip.type == "IMAGE"]
found = [
    {
        "name": strip.name,
        "channel": strip.channel,
        "start": strip.frame_final_start,
        "duration": strip.frame_final_duration,
        "elements": len(strip.elements),
        **{key: strip[key] for key in strip.keys() if key.startswith("motionclone_")},
    }
    for strip in strips
]
print("STRIPS " + json.dumps(found))
print("CAMERA " + json.dumps(scene.camera.name if scene.camera else None))
"""

BUILD_BLOCKOUT_TWICE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import bpy
from blender_addon import demo_scene
report = {}
for kind in ("object", "camera"):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    counts = []
    for _ in range(2):
        camera = demo_scene.build_blockout_scene(scene, kind, 12)
        counts.append([len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.cameras), len(bpy.data.actions)])
    positions = {}
    for frame in (1, 12):
        scene.frame_set(frame)
        figure = bpy.data.objects.get("Figure")
        positions[frame] = {
            "camera": list(camera.matrix_world.translation),
            "figure": list(figure.matrix_world.translation) if figure else None,
        }
    report[kind] = {
        "counts": counts,
        "positions": positions,
        "range": [scene.frame_start, scene.frame_end],
        "size": [scene.render.resolution_x, scene.render.resolution_y],
        "is_scene_camera": scene.camera == camera,
        "color_type": scene.display.shading.color_type,
    }
print("REPORT " + json.dumps(report))
"""


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def tagged_json(output: str, tag: str) -> object:
    lines = [line for line in output.splitlines() if line.startswith(f"{tag} ")]
    assert lines, f"no {tag} line in:\n{output}"
    return json.loads(lines[-1][len(tag) + 1 :])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "out"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, str(DEMO), "--small", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        cwd=ROOT,
        env=environment,
        check=False,
    )
    return out, completed


@pytest.mark.slow
def test_demo_small_exits_zero_and_writes_every_output(demo_run):
    out, completed = demo_run
    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    for name in OUTPUTS:
        assert (out / name).is_file(), name
        assert str(out / name) in completed.stdout  # the demo says where each file is
    for stage in ("scene", "backend start", "render+submit", "generate", "write"):
        assert f"[{stage}] done in " in completed.stdout
    assert re.search(r"Denoise \d/2", completed.stdout)  # progress while it runs
    assert "Timings: " in completed.stdout


@pytest.mark.slow
def test_demo_videos_have_the_expected_frames_and_size(demo_run):
    out, completed = demo_run
    assert completed.returncode == 0, completed.stderr
    for name in ("reference.mp4", "result.mp4"):
        clip = read_clip(out / name)
        assert clip.frames.shape == (SMALL_FRAMES, SMALL_SIZE, SMALL_SIZE, 3), name
        assert clip.fps == pytest.approx(8.0)
    reference_frames = sorted((out / "reference").glob("*.png"))
    assert len(reference_frames) == SMALL_FRAMES
    parameters = json.loads((out / "parameters.json").read_text())
    assert parameters["parameters"]["num_frames"] == SMALL_FRAMES
    assert parameters["parameters"]["num_inference_steps"] == 2
    assert parameters["sampled_frames"] == list(range(1, SMALL_FRAMES + 1))


@pytest.mark.slow
def test_demo_comparison_has_two_filled_rows_of_tiles(demo_run):
    out, completed = demo_run
    assert completed.returncode == 0, completed.stderr
    with Image.open(out / "comparison.png") as image:
        sheet = np.asarray(image.convert("RGB"))
    assert sheet.shape == (2 * TILE + 3 * GAP, COLUMNS * TILE + (COLUMNS + 1) * GAP, 3)
    for top in (GAP, 2 * GAP + TILE):
        row = sheet[top : top + TILE, GAP:-GAP]
        assert (row != 255).any(axis=2).mean() > 0.5  # tiles, not background
    assert (sheet[:GAP] == 255).all() and (sheet[GAP + TILE : 2 * GAP + TILE] == 255).all()  # white gaps


@pytest.mark.slow
def test_demo_blend_holds_the_result_strip_with_its_properties(demo_run):
    out, completed = demo_run
    assert completed.returncode == 0, completed.stderr
    inspected = run_python(INSPECT_BLEND, str(out / "demo.blend"))
    assert inspected.returncode == 0, inspected.stderr
    strips = tagged_json(inspected.stdout, "STRIPS")
    assert len(strips) == 1
    strip = strips[0]
    assert (strip["start"], strip["duration"], strip["elements"]) == (1, SMALL_FRAMES, SMALL_FRAMES)
    # The demo's default backend is the built-in blocks model, with a prompt of its grammar and its own config.
    assert strip["motionclone_prompt"] == "a red figure walking right in a grey blockout room"
    assert strip["motionclone_seed"] == 2025
    assert strip["motionclone_config"] == "blocks"
    assert len(strip["motionclone_job_id"]) == 32
    assert strip["motionclone_backend_version"]
    assert tagged_json(inspected.stdout, "CAMERA") == "Blockout Camera"


def test_blockout_builds_the_same_scene_twice_with_the_motion_of_its_kind():
    built = run_python(BUILD_BLOCKOUT_TWICE, str(ROOT))
    assert built.returncode == 0, built.stderr
    report = tagged_json(built.stdout, "REPORT")
    for kind, facts in report.items():
        assert facts["counts"][0] == facts["counts"][1], kind  # building again replaces, never duplicates
        assert facts["range"] == [1, 12] and facts["size"] == [512, 512] and facts["is_scene_camera"]
        assert facts["color_type"] == "OBJECT"
    first, last = report["object"]["positions"]["1"], report["object"]["positions"]["12"]
    assert first["camera"] == last["camera"]  # static camera
    assert last["figure"][0] - first["figure"][0] > 4.0  # the figure walks across the frame
    first, last = report["camera"]["positions"]["1"], report["camera"]["positions"]["12"]
    assert first["figure"] is None  # no figure in the camera clip
    assert np.linalg.norm(np.subtract(last["camera"], first["camera"])) > 3.0  # the camera moves


def test_comparison_sheet_lays_out_evenly_picked_frames_keeping_aspect():
    reference = np.stack([np.full((32, 64, 3), index, dtype=np.uint8) for index in range(10)])
    result = np.zeros((3, 16, 16, 3), dtype=np.uint8) + 200
    sheet = comparison_sheet(reference, result, columns=4, tile=20, gap=2)
    # 3 columns: the result has only 3 frames. Reference tiles are 20 x 10, result tiles 20 x 20.
    assert sheet.shape == (10 + 20 + 3 * 2, 3 * 20 + 4 * 2, 3)
    assert [int(sheet[2 + 5, 2 + column * 22 + 10, 0]) for column in range(3)] == [0, 4, 9]  # first, middle, last
    assert (sheet[2 + 10 + 2 : 2 + 10 + 2 + 20, 2:22] == 200).all()
    assert (sheet[:2] == 255).all()


def test_comparison_sheet_rejects_bad_input_naming_the_argument(tmp_path):
    frames = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ParameterError, match="`result`"):
        comparison_sheet(frames, frames.astype(np.float32))
    with pytest.raises(ParameterError, match="`tile`"):
        comparison_sheet(frames, frames, tile=0)
    with pytest.raises(ParameterError, match="`image`"):
        write_png(tmp_path / "sheet.png", frames)
    written = write_png(tmp_path / "nested" / "sheet.png", comparison_sheet(frames, frames, tile=8))
    with Image.open(written) as image:
        assert image.size == (2 * 8 + 3 * 4, 2 * 8 + 3 * 4)


def test_a_remote_server_is_refused_up_front_with_how_to_forward_it(tmp_path):
    """Blender as a module has online access off: a remote --server is refused before anything is built."""
    completed = subprocess.run(
        [sys.executable, str(DEMO), "--server", "tcp://192.0.2.7:5555", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 2
    assert "ssh -N -L 5555:127.0.0.1:5555" in completed.stderr and "--server tcp://127.0.0.1:5555" in completed.stderr
    assert not (tmp_path / "out").exists()


def test_the_demo_asks_a_running_backend_which_model_it_serves(tmp_path):
    """`--server`: the prompt, size and config follow that backend's model (a plain `motionclone serve` on a CPU
    runs the built-in blocks model, which the demo's real-weights prompt and size would only give noise)."""
    from motionclone.backend.process import BackendProcess

    demo = load_script("demo")
    backend = BackendProcess.start(tmp_path / "results", "blocks", "cpu", timeout=120)
    try:
        assert demo.served_preset(backend.endpoint) == "blocks"
    finally:
        backend.stop(30)
