"""`evaluate` and `motionclone evaluate`: reference sampling, result folders and bare videos, files and exit codes."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from motionclone.backend.cli import main
from motionclone.backend.errors import ParameterError
from motionclone.backend.evaluation import evaluate, sample_reference
from motionclone.backend.evaluation.subject_mask import SUBJECT_MASK_DIR
from motionclone.backend.models.manifest import MANIFEST_NAME, file_sha256
from motionclone.backend.results import write_result_folder
from motionclone.backend.video_io import resize_frames, write_mp4

from .synthetic import square_on_plain_clip, texture

SIZE = 96
PROMPT = "a red ball bouncing on grass under a blue sky"


def turning_square_clip(num_frames: int = 48) -> np.ndarray:
    """A textured square over a plain gradient moving right, then down, then left (2 px per frame)."""
    rows = np.linspace(40, 160, SIZE, dtype=np.float32)[:, None, None]
    background = np.broadcast_to(rows * np.array([0.6, 0.8, 1.0], dtype=np.float32), (SIZE, SIZE, 3)).astype(np.uint8)
    patch = texture(24, 24, seed=5)
    x, y, frames = 8, 8, []
    third = num_frames // 3
    for t in range(num_frames):
        frame = background.copy()
        frame[y : y + 24, x : x + 24] = patch
        frames.append(frame)
        dx, dy = ((2, 0), (0, 2), (-2, 0))[min(t // third, 2)]
        x, y = x + dx, y + dy
    return np.stack(frames)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A 48-frame reference video and a 16-frame result folder made from it with the official sampling rule."""
    root = tmp_path_factory.mktemp("evaluate")
    reference = turning_square_clip()
    reference_path = write_mp4(reference, root / "reference.mp4")
    indices = np.linspace(0, 47, 16, dtype=int)
    metadata = {
        "seed": 1,
        "parameters": {"prompt": PROMPT, "num_frames": 16, "height": SIZE, "width": SIZE, "resize_mode": "squash"},
    }
    result_dir = root / "result"
    write_result_folder(reference[indices], metadata, result_dir, fps=8)
    return {"reference": reference, "reference_path": reference_path, "result_dir": result_dir, "indices": indices}


def test_colour_and_class_read_the_networks_region_unless_the_moving_region_is_asked_for(clips, tmp_path):
    default = evaluate(clips["reference_path"], clips["result_dir"])["metrics"]
    manifest_sha256 = file_sha256(SUBJECT_MASK_DIR / MANIFEST_NAME)
    for name in ("colour_adherence", "class_adherence"):
        settings = default[name]["settings"]
        assert settings["subject_region"] == "network" and settings["network"] == "backend/models/subject_mask"
        assert settings["network_manifest_sha256"] == manifest_sha256 and settings["network_training"]["held_out_iou"]
    out = tmp_path / "moving"
    args = ["evaluate", "--reference", str(clips["reference_path"]), "--result", str(clips["result_dir"])]
    assert main([*args, "--out", str(out), "--subject-region", "moving"]) == 0
    moving = json.loads((out / "metrics.json").read_text())["metrics"]
    for name in ("colour_adherence", "class_adherence"):
        assert moving[name]["settings"]["subject_region"] == "moving" and "network" not in moving[name]["settings"]
    with pytest.raises(ParameterError, match="`subject_region`"):
        evaluate(clips["reference_path"], clips["result_dir"], subject_region="box")


def test_sample_reference_follows_the_official_rule_and_resize_mode():
    coded = np.broadcast_to((np.arange(48) * 5).astype(np.uint8)[:, None, None, None], (48, 8, 12, 3)).copy()
    sampled = sample_reference(coded, 16, 8, 12, "squash")
    expected = np.linspace(0, 47, 16, dtype=int)  # 0, 3, 6, 9, 12, 15, 18, 21, 25, ...
    np.testing.assert_array_equal(sampled.indices, expected)
    np.testing.assert_array_equal(sampled.frames[:, 0, 0, 0] // 5, expected)
    assert sampled.total_frames == 48 and sampled.notes == []

    varied = np.random.default_rng(0).integers(0, 256, (48, 24, 40, 3)).astype(np.uint8)
    cropped = sample_reference(varied, 16, 16, 16, "crop")
    np.testing.assert_array_equal(cropped.frames, resize_frames(varied[expected], 16, 16, "crop"))


def test_a_reference_shorter_than_the_result_is_used_whole_with_a_note():
    short = np.zeros((5, 8, 8, 3), dtype=np.uint8)
    sampled = sample_reference(short, 16, 8, 8, "squash")
    assert len(sampled.frames) == 5 and sampled.indices.tolist() == [0, 1, 2, 3, 4]
    assert "fewer than the result's 16" in sampled.notes[0] and sampled.all_frames


def test_evaluate_samples_the_reference_like_the_result_was_made(clips, tmp_path):
    report = evaluate(clips["reference_path"], clips["result_dir"], out_dir=None)
    sampling = report["inputs"]["reference_sampling"]
    assert sampling["indices"] == clips["indices"].tolist() and sampling["total_frames"] == 48
    assert sampling["resize_mode"] == "squash" and sampling["resize_mode_from"] == "result.json"
    assert report["inputs"]["prompt"] == PROMPT and report["inputs"]["prompt_from"] == "result.json"
    assert "PNG sequence" in report["inputs"]["result_frames_from"]
    # The result is the sampled reference, so motion agrees: right, then down, then left, in step.
    assert report["motion_fidelity"] > 0.95
    # Taking the reference's first 16 frames instead (all moving right) would not match the turns.
    wrong = evaluate(clips["reference"][:16], clips["result_dir"])
    assert wrong["motion_fidelity"] < report["motion_fidelity"] - 0.3
    assert report["files"] == {} and not (tmp_path / "metrics.json").exists()
    overridden = evaluate(clips["reference_path"], clips["result_dir"], subject_colour="blue")
    assert "--subject-colour blue differs from the prompt's red: blue is scored" in overridden["warnings"]
    assert overridden["metrics"]["colour_adherence"]["expected"] == "blue" and report["warnings"] == []


def test_evaluate_uses_the_interval_rule_an_inversion_result_was_made_with(clips, tmp_path):
    indices = np.arange(16) * 3  # 48 // 16: 0, 3, ..., 45, where linspace ends on 47
    metadata = {"parameters": {"num_frames": 16, "height": SIZE, "width": SIZE, "frame_sampling": "interval"}}
    write_result_folder(clips["reference"][indices], metadata, tmp_path / "result", fps=8)
    report = evaluate(clips["reference_path"], tmp_path / "result")
    sampling = report["inputs"]["reference_sampling"]
    assert sampling["indices"] == indices.tolist() and sampling["rule_from"] == "result.json"
    assert "total_frames // num_frames" in sampling["rule"]
    assert report["motion_fidelity"] > 0.95
    frames_only = evaluate(clips["reference_path"], tmp_path / "result" / "frames")  # its folder's result.json
    assert frames_only["inputs"]["reference_sampling"]["indices"] == indices.tolist()
    assert frames_only["warnings"] == []
    renamed = tmp_path / "shot.mp4"
    (tmp_path / "result" / "result.mp4").rename(renamed)  # a video on its own: the default rule, said so
    alone = evaluate(clips["reference_path"], renamed)
    assert alone["inputs"]["reference_sampling"]["rule_from"] == "default (no result.json)"
    assert any("no result.json with the result" in warning for warning in alone["warnings"])


def test_evaluate_uses_the_frame_step_a_long_shot_result_was_made_with(clips, tmp_path):
    indices = np.arange(16) * 2  # every 2nd frame from the first: right, then down; the whole clip would turn left too
    metadata = {
        "parameters": {
            "num_frames": 16, "height": SIZE, "width": SIZE, "frame_sampling": "step", "frame_step": 2,
        }
    }  # fmt: skip
    write_result_folder(clips["reference"][indices], metadata, tmp_path / "result", fps=12)
    report = evaluate(clips["reference_path"], tmp_path / "result")
    sampling = report["inputs"]["reference_sampling"]
    assert sampling["indices"] == indices.tolist() and sampling["frame_step"] == 2
    assert sampling["rule"] == "np.arange(num_frames) * frame_step"
    assert report["motion_fidelity"] > 0.95


def test_evaluate_warns_when_the_reference_gives_other_frames_than_result_json_recorded(clips, tmp_path):
    recorded = {"indices": clips["indices"].tolist(), "source_fps": 24.0}
    metadata = {"parameters": {"num_frames": 16, "height": SIZE, "width": SIZE}, "reference_frames": recorded}
    write_result_folder(clips["reference"][clips["indices"]], metadata, tmp_path / "result", fps=8)
    assert evaluate(clips["reference_path"], tmp_path / "result")["warnings"] == []  # the clip it was made from
    recut = evaluate(clips["reference"][:40], tmp_path / "result")  # the same shot cut shorter: other frames
    (warning,) = recut["warnings"]
    assert "result.json says the result was made from reference frames [0, 3, 6, 9, 12, 15, …] (16 frames)" in warning
    assert "this reference (40 frames) gives [0, 2, 5, 7, 10, 13, …] (16 frames)" in warning
    # `motionclone submit` sampled the clip it was given with the same rule: its recorded indices are compared too.
    metadata["reference_frames"] = {**recorded, "sampled_by": "client"}
    write_result_folder(clips["reference"][clips["indices"]], metadata, tmp_path / "client", fps=8)
    assert evaluate(clips["reference_path"], tmp_path / "client")["warnings"] == []
    (client_warning,) = evaluate(clips["reference"][:40], tmp_path / "client")["warnings"]
    assert client_warning == warning


def test_motion_fidelity_against_a_still_reference_is_degenerate_not_measured(clips):
    still = np.repeat(clips["reference"][:1], 48, axis=0)
    report = evaluate(still, clips["result_dir"])
    fidelity = report["metrics"]["motion_fidelity"]
    assert report["motion_fidelity"] == 0.0 and fidelity["status"] == "degenerate" and "reference" in fidelity["reason"]
    assert report["metrics"]["motion_fidelity_released"]["status"] == "degenerate"
    moving = evaluate(clips["reference_path"], clips["result_dir"])["metrics"]
    assert moving["motion_fidelity"]["status"] == "measured" and "reason" not in moving["motion_fidelity"]
    assert moving["motion_fidelity"]["method"].startswith("DMT motion fidelity")


def test_a_reference_too_short_for_the_frame_step_gives_every_step_th_frame_with_a_note():
    coded = np.broadcast_to((np.arange(20) * 10).astype(np.uint8)[:, None, None, None], (20, 8, 8, 3)).copy()
    sampled = sample_reference(coded, 16, 8, 8, "squash", "step", 2)
    assert sampled.indices.tolist() == list(range(0, 20, 2))
    np.testing.assert_array_equal(sampled.frames[:, 0, 0, 0] // 10, np.arange(0, 20, 2))
    assert "fewer than the 31 that 16 frames every 2 span: one in 2 is used" in sampled.notes[0]
    with pytest.raises(ParameterError, match="frame_step"):
        sample_reference(coded, 16, 8, 8, "squash", "step", 0)


def test_cli_on_a_result_folder_writes_metrics_and_tracks(clips, capsys):
    result_dir = clips["result_dir"]
    code = main(["evaluate", "--reference", str(clips["reference_path"]), "--result", str(result_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    metrics_path, image_path = result_dir / "evaluation" / "metrics.json", result_dir / "evaluation" / "tracks.png"
    metrics = json.loads(metrics_path.read_text())
    assert isinstance(metrics["motion_fidelity"], float) and metrics["motion_fidelity"] > 0.95
    fidelity = metrics["metrics"]["motion_fidelity"]
    # The result is the reference's own frames: it reaches the most the reference can score against itself.
    assert fidelity["reference_against_itself"] == pytest.approx(metrics["motion_fidelity"], abs=0.01)
    assert fidelity["variant"] == "symmetric"
    assert metrics["metrics"]["motion_fidelity_released"]["variant"] == "released"
    assert fidelity["tracker"]["name"] == "opencv-lk-pyramidal"
    assert {"window_px", "pyramid_levels", "forward_backward_threshold_px"} <= set(fidelity["tracker"])
    assert fidelity["grid"]["points_per_side"] == 32 and fidelity["frames"] == 16
    assert fidelity["resolution"] == {"width": SIZE, "height": SIZE}
    assert fidelity["region"]["mode"] == "moving"
    assert fidelity["tracks"]["reference"]["used"] > 10 and fidelity["tracks"]["result"]["used"] > 10
    assert metrics["metrics"]["clip_text_alignment"]["status"] == "not measured"
    assert metrics["metrics"]["colour_adherence"]["expected"] == "red"  # parsed from result.json's prompt
    with Image.open(image_path) as image:
        assert image.format == "PNG" and image.width == 4 * 256 and image.height > 2 * 256
    assert "Motion fidelity" in out and str(metrics_path) in out and "not measured" in out


def test_cli_on_a_bare_video(clips, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    shutil.copy(clips["result_dir"] / "result.mp4", video)
    args = ["evaluate", "--reference", str(clips["reference_path"]), "--result", str(video), "--prompt", PROMPT]
    code = main([*args, "--region", "all", "--grid", "20"])
    assert code == 0, capsys.readouterr()
    metrics = json.loads((tmp_path / "clip-evaluation" / "metrics.json").read_text())
    assert isinstance(metrics["motion_fidelity"], float)
    assert metrics["inputs"]["result_json"] is False
    assert metrics["inputs"]["reference_sampling"]["resize_mode_from"] == "default (no result.json)"
    assert metrics["inputs"]["reference_sampling"]["indices"] == clips["indices"].tolist()
    assert metrics["metrics"]["motion_fidelity"]["region"]["mode"] == "all"
    assert metrics["metrics"]["motion_fidelity"]["grid"]["points"] == 400
    assert (tmp_path / "clip-evaluation" / "tracks.png").is_file()


def test_a_reference_cut_short_is_named_once_in_the_reports_warnings(clips, tmp_path, capsys):
    whole = tmp_path / "whole.mkv"
    ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(clips["reference_path"]), "-c:v", "png"]
    subprocess.run([*ffmpeg, str(whole)], check=True, capture_output=True)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    args = ["evaluate", "--reference", str(cut), "--result", str(clips["result_dir"]), "--out", str(tmp_path / "e")]
    assert main([*args, "--grid", "16"]) == 0
    stderr = capsys.readouterr().err
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    named = [warning for warning in metrics["warnings"] if "may be cut short" in warning]
    assert len(named) == 1 and str(cut) in named[0]  # the reference is decoded three times, named once
    assert stderr.count("may be cut short") == 1 and "VideoInputWarning" not in stderr


def test_cli_region_box_restricts_the_grid(clips, tmp_path, capsys):
    out = tmp_path / "boxed"
    args = ["evaluate", "--reference", str(clips["reference_path"]), "--result", str(clips["result_dir"])]
    assert main([*args, "--out", str(out), "--region", "box", "--box", "4", "4", "40", "40"]) == 0
    grid = json.loads((out / "metrics.json").read_text())["metrics"]["motion_fidelity"]["grid"]
    assert grid["box_xyxy"] == [4.0, 4.0, 40.0, 40.0]
    assert main([*args, "--out", str(out), "--region", "box", "--box", "-10", "4", "500", "40"]) == 0
    grid = json.loads((out / "metrics.json").read_text())["metrics"]["motion_fidelity"]["grid"]
    assert grid["box_xyxy"] == [0.0, 4.0, SIZE, 40.0]  # the box the grid was laid in, cut to the frame
    assert main([*args, "--out", str(out), "--region", "box"]) == 0  # box from the reference's moving tracks
    box = json.loads((out / "metrics.json").read_text())["metrics"]["motion_fidelity"]["grid"]["box_xyxy"]
    assert box is not None and box[0] < 12 and box[1] < 12 and box[2] < SIZE  # around the square's start (8, 8)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--grid", "1"], 2, "`--grid` must be an integer of at least 2"),
        (["--subject-colour", "mauve"], 2, "`--subject-colour` must be one of"),
        (["--box", "0", "0", "10", "10"], 2, "`--box` only applies with region 'box'"),
        (["--moving-threshold", "5"], 2, "`--moving-threshold` must be a number in [0, 1)"),
        (["--still-step", "-1"], 2, "`--still-step` must be a number of pixels"),
        (["--region", "box", "--box", "0", "0", "inf", "inf"], 2, "`--box` must be four finite pixel coordinates"),
        (["--device", "cuda:0", "--clip-model", "/nonexistent/clip"], 2, "`--device` 'cuda:0' asks for CUDA"),
        (["--device", "toaster", "--clip-model", "/nonexistent/clip"], 2, "`--device` must be cpu, cuda or cuda:N"),
        (["--clip-model", "/nonexistent/clip"], 3, "CLIP checkpoint folder"),
        (["--cotracker", "/nonexistent/cotracker.pth"], 3, "CoTracker"),
    ],
)
def test_cli_errors_map_to_exit_codes(clips, tmp_path, capsys, monkeypatch, extra, code, message):
    monkeypatch.setitem(__import__("sys").modules, "cotracker", None)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # a machine without CUDA, even on a GPU machine
    args = ["evaluate", "--reference", str(clips["reference_path"]), "--result", str(clips["result_dir"])]
    assert main([*args, "--out", str(tmp_path / "out"), *extra]) == code
    assert message in capsys.readouterr().err


def test_cli_refuses_an_out_that_is_a_file_or_the_results_own_frames_before_any_work(clips, tmp_path, capsys):
    args = ["evaluate", "--reference", str(clips["reference_path"]), "--result", str(clips["result_dir"])]
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    assert main([*args, "--out", str(taken)]) == 2
    assert "`--out`" in capsys.readouterr().err and taken.read_text() == "mine"
    frames = clips["result_dir"] / "frames"
    before = sorted(path.name for path in frames.iterdir())
    assert main([*args, "--out", str(frames)]) == 2
    assert "holds the result's frames" in capsys.readouterr().err
    assert sorted(path.name for path in frames.iterdir()) == before


def test_cli_unreadable_videos_exit_4(clips, tmp_path, capsys):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video")
    assert main(["evaluate", "--reference", str(garbage), "--result", str(clips["result_dir"])]) == 4
    assert "garbage.mp4" in capsys.readouterr().err
    assert main(["evaluate", "--reference", str(clips["reference_path"]), "--result", str(tmp_path / "none")]) == 4
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--reference", str(clips["reference_path"]), "--result", str(tmp_path / "empty")]) == 4
    assert "neither frames/ nor result.mp4" in capsys.readouterr().err


def test_bad_records_in_result_json_name_the_file_and_a_too_short_reference_names_the_reference(
    clips, tmp_path, capsys
):
    from motionclone.backend.cli import EXIT_VIDEO

    broken = tmp_path / "broken"
    shutil.copytree(clips["result_dir"], broken)
    record = json.loads((broken / "result.json").read_text())
    command = ["evaluate", "--reference", str(clips["reference_path"]), "--result", str(broken)]
    for name, value in [("resize_mode", "bogus"), ("frame_sampling", "every"), ("frame_step", 0)]:
        changed = {**record, "parameters": {**record["parameters"], name: value}}
        (broken / "result.json").write_text(json.dumps(changed))
        assert main(command) == EXIT_VIDEO, name
        error = capsys.readouterr().err
        assert f"the result.json of {broken} is not valid: `{name}`" in error and "fix the file or remove it" in error
    (broken / "result.json").write_text("[1, 2]")
    assert main(command) == EXIT_VIDEO
    assert "holds a list, not a result record (a map)" in capsys.readouterr().err
    (broken / "result.json").write_text(json.dumps({"parameters": ["a red ball"]}))
    assert main([*command, "--out", str(tmp_path / "scored")]) == 0  # scored, and told why its record is unused
    assert "warning: result.json: its parameters are not a map, so none of them is used" in capsys.readouterr().err

    one_frame = write_mp4(turning_square_clip(3)[:1], tmp_path / "one.mp4")
    assert main(["evaluate", "--reference", str(one_frame), "--result", str(clips["result_dir"])]) == EXIT_VIDEO
    assert f"reference {one_frame} has 1 frame: 1 is too few, motion needs at least 2" in capsys.readouterr().err


def test_tracks_png_draws_slow_motion_in_its_direction_colour(tmp_path):
    # 1 px a frame at 96 px: well above the 0.1 px MF counts as motion, below 2 % of the side (1.9 px) per step.
    grey = square_on_plain_clip(velocity=(1, 0)).mean(axis=-1, keepdims=True).astype(np.uint8).repeat(3, axis=-1)
    write_result_folder(grey, {"parameters": {"num_frames": 16}}, tmp_path / "result", fps=8)
    report = evaluate(grey, tmp_path / "result", out_dir=tmp_path / "out")
    assert report["metrics"]["motion_fidelity"]["tracks"]["result"]["used"] > 10
    with Image.open(tmp_path / "out" / "tracks.png") as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # The frames are grey, so strongly red pixels are track segments drawn in the colour of "right".
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    assert red.sum() > 200


def test_an_evaluation_that_cannot_be_written_leaves_the_earlier_one_whole_and_no_temporary_file(
    clips, tmp_path, monkeypatch
):
    import sys

    evaluate_module = sys.modules["motionclone.backend.evaluation.evaluate"]  # the package exports the function
    out = tmp_path / "out"
    evaluate(clips["reference_path"], clips["result_dir"], out_dir=out)
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    assert sorted(earlier) == ["metrics.json", "tracks.png"]

    def full_disk(image, path, *args, **kwargs):
        Path(path).write_bytes(b"half a picture")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(Image.Image, "save", full_disk)
        with pytest.raises(OSError, match="No space left"):
            evaluate(clips["reference_path"], clips["result_dir"], out_dir=out, grid=16)
    with monkeypatch.context() as patched:  # metrics that cannot be written as JSON change neither file

        def not_json(report):
            raise ValueError("Out of range float values are not JSON compliant: nan")

        patched.setattr(evaluate_module, "metrics_json", not_json)
        with pytest.raises(ValueError, match="nan"):
            evaluate(clips["reference_path"], clips["result_dir"], out_dir=out, grid=16)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier  # no .partial, nothing changed


def test_a_result_no_track_can_follow_scores_0_measured_and_says_why_apart_from_a_still_one(clips, tmp_path):
    flash = clips["reference"][clips["indices"]].copy()
    flash[8] = 255  # one white frame: every track fails its forward-backward check there
    metadata = {"parameters": {"num_frames": 16, "height": SIZE, "width": SIZE}}
    write_result_folder(flash, metadata, tmp_path / "flash", fps=8)
    report = evaluate(clips["reference_path"], tmp_path / "flash")
    fidelity = report["metrics"]["motion_fidelity"]
    # A result that cannot be followed does not move like the reference: a measured 0, not a degenerate one.
    assert report["motion_fidelity"] == 0.0 and fidelity["status"] == "measured"
    result_tracks = fidelity["tracks"]["result"]
    assert result_tracks["valid_all_frames"] == 0 and result_tracks["used"] == 0
    assert result_tracks["none_used_because"] == "no track followed through all frames"
    assert fidelity["tracks"]["reference"]["none_used_because"] is None
    assert any("no result track could be followed through all 16 frames" in w for w in report["warnings"])
    assert not any("result has no moving tracks" in w for w in report["warnings"])

    still = np.repeat(clips["reference"][:1], 16, axis=0)
    write_result_folder(still, metadata, tmp_path / "still", fps=8)
    report = evaluate(clips["reference_path"], tmp_path / "still")
    result_tracks = report["metrics"]["motion_fidelity"]["tracks"]["result"]
    assert report["motion_fidelity"] == 0.0 and report["metrics"]["motion_fidelity"]["status"] == "measured"
    assert result_tracks["valid_all_frames"] > 0
    assert result_tracks["none_used_because"] == "no track followed through all frames moves"
    assert any("the result has no moving tracks" in w for w in report["warnings"])
    assert not any("could be followed" in w for w in report["warnings"])


def test_cli_prints_the_status_of_a_degenerate_motion_fidelity_next_to_its_value(clips, tmp_path, capsys):
    still = write_mp4(np.repeat(clips["reference"][:1], 48, axis=0), tmp_path / "still.mp4")
    args = ["evaluate", "--result", str(clips["result_dir"]), "--out", str(tmp_path / "e"), "--grid", "16"]
    assert main([*args, "--reference", str(still)]) == 0
    printed = capsys.readouterr().out
    assert (
        "Motion fidelity 0.0000 [degenerate: the reference has no tracks that take part (no track followed through "
        "all frames moves): nothing to compare] (symmetric;" in printed
    )
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["motion_fidelity"] == 0.0 and metrics["metrics"]["motion_fidelity"]["status"] == "degenerate"
    assert main([*args, "--reference", str(clips["reference_path"])]) == 0
    assert re.search(r"Motion fidelity \d\.\d{4} \(symmetric;", capsys.readouterr().out)  # measured: the value alone


def test_cli_refuses_an_out_in_the_result_folders_frames_or_the_reference_folder_before_any_work(
    clips, tmp_path, capsys
):
    frames = clips["result_dir"] / "frames"
    before = sorted(path.name for path in frames.iterdir())
    video = clips["result_dir"] / "result.mp4"  # read from its video, the folder's frames/ is still the result's
    assert (
        main(["evaluate", "--reference", str(clips["reference_path"]), "--result", str(video), "--out", str(frames)])
        == 2
    )
    error = capsys.readouterr().err
    assert "`--out`" in error and "holds the result's frames" in error and "give another folder" in error
    assert sorted(path.name for path in frames.iterdir()) == before

    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    for index, frame in enumerate(clips["reference"]):
        Image.fromarray(frame).save(reference_dir / f"{index:04d}.png")
    names = sorted(path.name for path in reference_dir.iterdir())
    args = ["evaluate", "--reference", str(reference_dir), "--result", str(clips["result_dir"])]
    assert main([*args, "--out", str(reference_dir)]) == 2
    error = capsys.readouterr().err
    assert "`--out`" in error and "is the reference's folder of frames" in error and "give another folder" in error
    assert sorted(path.name for path in reference_dir.iterdir()) == names


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("still_step_px", -1.0, "`still_step_px` must be a number of pixels in [0, 10)"),
        ("moving_fraction", 5.0, "`moving_fraction` must be a number in [0, 1)"),
        ("epsilon", 0.0, "`epsilon` must be a positive number of pixels below 1"),
    ],
)
def test_motion_fidelity_settings_are_checked_before_any_video_is_decoded(clips, monkeypatch, setting, value, message):
    import sys

    evaluate_module = sys.modules["motionclone.backend.evaluation.evaluate"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("a video was decoded before the settings were checked")

    for reader in ("read_clip", "probe_clip", "prepare_reference"):
        monkeypatch.setattr(evaluate_module, reader, no_decoding)
    with pytest.raises(ParameterError) as raised:
        evaluate(clips["reference_path"], clips["result_dir"], **{setting: value})
    assert message in str(raised.value)


def test_cli_names_the_flag_of_a_bad_still_step_before_reading_the_videos(tmp_path, capsys):
    missing = tmp_path / "missing"  # neither clip exists: the settings are refused first
    args = ["evaluate", "--reference", str(missing / "reference.mp4"), "--result", str(missing)]
    assert main([*args, "--still-step", "-1"]) == 2
    assert "`--still-step` must be a number of pixels in [0, 10)" in capsys.readouterr().err


def test_metrics_that_cannot_be_written_leave_the_earlier_tracks_png_too(clips, tmp_path, monkeypatch):
    out = tmp_path / "out"
    evaluate(clips["reference_path"], clips["result_dir"], out_dir=out)
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    write_text = Path.write_text

    def full_disk_for_metrics(path, *args, **kwargs):
        if "metrics.json" in path.name:
            raise OSError(28, "No space left on device")
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk_for_metrics)
    with pytest.raises(OSError, match="No space left"):
        evaluate(clips["reference_path"], clips["result_dir"], out_dir=out, grid=16)  # another picture than before
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier


def test_lucas_kanade_settings_with_cotracker_are_named_as_unused(clips, tmp_path, monkeypatch, capsys):
    import sys

    from motionclone.backend.evaluation.tracks import track_points

    evaluate_module = sys.modules["motionclone.backend.evaluation.evaluate"]
    # Stand-in for CoTracker (not installed here): any tracker will do, the warning is about the flags.
    monkeypatch.setattr(
        evaluate_module, "track_points_cotracker", lambda frames, points, *rest: track_points(frames, points)
    )
    monkeypatch.setattr(evaluate_module, "describe_cotracker", lambda checkpoint: {"name": "cotracker"})
    args = ["evaluate", "--reference", str(clips["reference_path"]), "--result", str(clips["result_dir"])]
    args += ["--out", str(tmp_path / "e"), "--grid", "16", "--cotracker", str(tmp_path / "cotracker.pth")]
    assert main([*args, "--window", "21", "--fb-threshold", "2"]) == 0
    error = capsys.readouterr().err
    assert "warning: --window 21, --fb-threshold 2.0: Lucas-Kanade settings, not used with --cotracker" in error
    assert "drop --cotracker" in error
    assert main(args) == 0  # the defaults: nothing to say
    assert "Lucas-Kanade settings" not in capsys.readouterr().err
