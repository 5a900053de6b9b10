"""`motionclone generate` as a user runs it: a real process, a real video file, the tiny preset."""

import json
import os
import subprocess
import sys

import imageio_ffmpeg
import pytest

from motionclone.backend.engine.parameters import CONFIG_PRESETS
from motionclone.backend.models.registry import NATIVE_SIZES
from motionclone.backend.results import write_result_folder
from motionclone.backend.samples import make_moving_square_clip
from motionclone.backend.video_io import read_clip, write_mp4, write_png_sequence


def run_cli(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "motionclone.backend", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def reference_video(tmp_path_factory):
    return write_mp4(make_moving_square_clip(20, 96, 96), tmp_path_factory.mktemp("ref") / "reference.mp4")


def test_generate_writes_video_frames_and_metadata(reference_video, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        "generate",
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--reference",
        str(reference_video),
        "--prompt",
        "a fox",
        "--frames",
        "8",
        "--width",
        "96",
        "--height",
        "64",
        "--steps",
        "4",
        "--guidance-steps",
        "2",
        "--seed",
        "42",
        "--set",
        "motion_norm=cross-frame",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "result.mp4" in result.stdout
    video = read_clip(out / "result.mp4")
    assert video.frames.shape == (8, 64, 96, 3)
    assert sorted(path.name for path in (out / "frames").iterdir()) == [f"{i:04d}.png" for i in range(1, 9)]
    metadata = json.loads((out / "result.json").read_text())
    assert metadata["seed"] == 42
    assert metadata["parameters"]["motion_norm"] == "cross-frame"
    assert metadata["parameters"]["num_inference_steps"] == 4


def test_generate_warns_in_its_own_words_about_a_reference_cut_short(reference_video, tmp_path):
    whole = tmp_path / "whole.mkv"
    ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(reference_video)]
    subprocess.run([*ffmpeg, "-c:v", "png", str(whole)], check=True, capture_output=True)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    small = ["--frames", "2", "--width", "32", "--height", "32", "--steps", "2", "--guidance-steps", "1"]
    common = ["generate", "--preset", "tiny", "--device", "cpu", "--prompt", "a fox", *small]
    # --frame-step reads the clip's length before the clip: the same warning both times, shown once.
    result = run_cli(*common, "--frame-step", "1", "--reference", str(cut), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "may be cut short" in line]
    assert len(warned) == 1 and warned[0].startswith(f"warning: video {cut} decoded to "), result.stderr
    assert "VideoInputWarning" not in result.stderr and "video_io.py" not in result.stderr


def test_generate_with_a_sparsectrl_condition_records_it(reference_video, tmp_path):
    from PIL import Image

    keyframe = tmp_path / "keyframe.png"
    Image.fromarray(make_moving_square_clip(1, 120, 120)[0]).save(keyframe)
    common = ["generate", "--preset", "tiny", "--device", "cpu", "--reference", str(reference_video)]
    common += ["--prompt", "a fox", "--frames", "8", "--width", "64", "--height", "64", "--steps", "2"]
    common += ["--guidance-steps", "1", "--condition", str(keyframe), "--condition-type", "scribble"]
    result = run_cli(*common, "--condition-frames", "0,7", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    recorded = json.loads((tmp_path / "out" / "result.json").read_text())["condition"]
    assert (recorded["kind"], recorded["frames"], recorded["scale"]) == ("scribble", [0, 7], 1.0)
    assert len(recorded["sha256"]) == 64
    result = run_cli(*common, "--condition-frames", "0,8", "--out", str(tmp_path / "bad"), cwd=tmp_path)
    assert result.returncode == 2 and "condition_frames" in result.stderr and "[0, 7]" in result.stderr
    assert "(set with --condition-frames)" in result.stderr


def test_condition_images_are_shrunk_as_the_official_code_shrinks_them(tmp_path):
    # PIL's antialiased bilinear (the official code's torchvision Resize on a PIL image): fine detail averages out.
    import argparse
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from motionclone.backend.cli import condition_from_args

    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    Image.fromarray(board).convert("RGB").save(tmp_path / "board.png")
    args = argparse.Namespace(condition=[str(tmp_path / "board.png")], condition_frames="0", condition_type="rgb")
    condition = condition_from_args(args, SimpleNamespace(height=32, width=32))
    assert condition.images.shape == (1, 32, 32, 3)
    assert np.abs(condition.images.astype(int) - 128).max() <= 8


def test_running_out_of_memory_exits_5_with_what_to_lower_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    import torch

    from motionclone.backend import cli

    def out_of_memory(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")

    monkeypatch.setattr(cli, "command_generate", out_of_memory)
    argv = ["generate", "--reference", "clip.mp4", "--prompt", "a fox", "--out", "out"]
    assert cli.run(argv) == 5
    error = capsys.readouterr().err
    assert "The GPU ran out of memory: CUDA out of memory. Tried to allocate 2.00 GiB." in error
    assert "--dtype float16" in error and "more details" not in error

    def bug(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "command_generate", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.run(argv)


def test_bad_parameter_exits_2_and_names_it(reference_video, tmp_path):
    result = run_cli(
        "generate",
        "--preset",
        "tiny",
        "--reference",
        str(reference_video),
        "--prompt",
        "x",
        "--width",
        "100",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "`width` must be a multiple of 8, got 100 (set with --width)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_frame_count_error_gives_the_whole_range_and_the_flag(reference_video, tmp_path, capsys):
    from motionclone.backend.cli import EXIT_PARAMETERS, main

    for frames in ("1", "300"):
        assert main(tiny_generate(reference_video, tmp_path / "out", frames)) == EXIT_PARAMETERS
        assert f"`num_frames` must be between 2 and 256, got {frames} (set with --frames)" in capsys.readouterr().err


def test_a_frame_step_out_of_range_names_both_bounds_and_the_flag(reference_video, tmp_path, capsys):
    from motionclone.backend.cli import EXIT_PARAMETERS, main
    from motionclone.backend.video_io import MAX_FRAME_STEP

    for step in (0, MAX_FRAME_STEP + 1):
        args = [*tiny_generate(reference_video, tmp_path / "out", 8), "--frame-step", str(step)]
        assert main(args) == EXIT_PARAMETERS
        expected = f"at least 1 and at most {MAX_FRAME_STEP}, got {step} (set with --frame-step)"
        assert expected in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


def test_unreadable_reference_exits_4_with_the_path(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    result = run_cli(
        "generate",
        "--preset",
        "tiny",
        "--reference",
        str(broken),
        "--prompt",
        "x",
        "--frames",
        "8",
        "--width",
        "64",
        "--height",
        "64",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert result.returncode == 4
    assert "broken.mp4" in result.stderr


def parse_generate(*extra: str):
    from motionclone.backend.cli import build_parser

    return build_parser().parse_args(
        ["generate", "--reference", "r.mp4", "--prompt", "a red ball", "--out", "o", *extra]
    )


def test_cpu_default_is_the_blocks_preset_at_its_native_size_and_config():
    from motionclone.backend.cli import params_from_args, resolve_preset

    args = parse_generate("--device", "cpu")
    preset, device = resolve_preset(args)
    assert (preset, device) == ("blocks", "cpu")
    params = params_from_args(args, preset)
    assert (params.num_frames, params.height, params.width) == (16, 64, 64)
    assert params.num_inference_steps == CONFIG_PRESETS["blocks"]["num_inference_steps"]
    assert params.negative_prompt == ""


def test_explicit_size_config_and_preset_win_over_the_defaults(monkeypatch):
    from motionclone.backend.cli import build_parser, params_from_args, resolve_preset

    args = parse_generate("--preset", "tiny", "--width", "96", "--config", "object", "--device", "cpu")
    preset, _ = resolve_preset(args)
    params = params_from_args(args, preset)
    assert preset == "tiny"
    assert (params.height, params.width) == (64, 96)
    assert params.num_inference_steps == CONFIG_PRESETS["object"]["num_inference_steps"]
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # a GPU machine: its default preset
    assert resolve_preset(parse_generate("--device", "cuda"))[0] == "sd15-animatediff-v3"
    # A Ray front end without a GPU of its own: the device is the workers', on other nodes.
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    ray_front = build_parser(["serve"]).parse_args(["serve", "--workers", "ray:auto", "--device", "cuda"])
    assert resolve_preset(ray_front) == ("sd15-animatediff-v3", "cuda")


def test_server_fills_the_native_size_of_its_preset_only_where_the_request_is_silent():
    from motionclone.backend.server.server import _params_from_request

    params = _params_from_request({"prompt": "a red ball", "config": "blocks", "width": 128}, "blocks")
    assert (params.num_frames, params.height, params.width) == (16, 64, 128)
    assert params.negative_prompt == ""


def test_a_request_without_a_config_gets_its_presets_default_config():
    from motionclone.backend.engine import MotionCloneParams
    from motionclone.backend.server.server import _params_from_request

    for preset, config in (("blocks", "blocks"), ("sd15-animatediff-v3", "camera"), ("tiny", "camera")):
        params = _params_from_request({"prompt": "a red ball", "seed": 3}, preset)
        expected = MotionCloneParams.from_config(config, prompt="a red ball", seed=3, **NATIVE_SIZES[preset])
        assert params == expected, preset
    assert _params_from_request({"prompt": "x"}, "blocks") != _params_from_request({"prompt": "x"}, "tiny")


def test_frame_step_takes_every_nth_frame_at_the_clips_pace_in_windows(tmp_path):
    reference = write_mp4(make_moving_square_clip(40, 64, 64), tmp_path / "long.mp4", fps=24.0)
    out = tmp_path / "out"
    result = run_cli(
        "generate",
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--reference",
        str(reference),
        "--prompt",
        "a fox",
        "--frame-step",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "2",
        "--guidance-steps",
        "1",
        "--no-progress",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metadata = json.loads((out / "result.json").read_text())
    assert metadata["parameters"]["num_frames"] == 20 and metadata["parameters"]["fps"] == 12.0
    assert metadata["reference_frames"] == {"indices": list(range(0, 40, 2)), "source_fps": 24.0}
    assert len(metadata["context_windows"]) == 2  # 20 frames in windows of 16 overlapping by 4
    assert read_clip(out / "result.mp4").frames.shape[0] == 20


def tiny_generate(reference, out, frames):
    return ["generate", "--preset", "tiny", "--device", "cpu", "--reference", str(reference), "--prompt", "a fox",
            "--frames", str(frames), "--width", "64", "--height", "64", "--steps", "2", "--guidance-steps", "1",
            "--no-progress", "--out", str(out)]  # fmt: skip


def test_an_out_folder_holding_a_result_is_refused_before_the_model_loads_and_overwrite_replaces_all_of_it(
    reference_video, tmp_path, capsys, monkeypatch
):
    from motionclone.backend import generate
    from motionclone.backend.cli import EXIT_PARAMETERS, EXIT_VIDEO, main

    out = tmp_path / "out"
    assert main(tiny_generate(reference_video, out, 8)) == 0
    (out / "evaluation").mkdir()
    (out / "evaluation" / "metrics.json").write_text("{}")  # `motionclone evaluate` of that result
    (out / "notes.txt").write_text("mine")
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(generate, "load_preset", no_model)
    capsys.readouterr()
    assert main(tiny_generate(reference_video, out, 4)) == EXIT_PARAMETERS
    error = capsys.readouterr().err
    assert f"{out} already holds a result (" in error and "add --overwrite to replace it" in error
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before  # untouched
    assert main(tiny_generate(tmp_path / "missing.mp4", tmp_path / "new", 4)) == EXIT_VIDEO  # before loading too
    assert "missing.mp4" in capsys.readouterr().err

    monkeypatch.undo()
    assert main([*tiny_generate(reference_video, out, 4), "--overwrite"]) == 0
    assert sorted(path.name for path in (out / "frames").iterdir()) == [f"{i:04d}.png" for i in range(1, 5)]
    assert read_clip(out / "result.mp4").frames.shape[0] == 4
    assert json.loads((out / "result.json").read_text())["parameters"]["num_frames"] == 4
    assert not (out / "evaluation" / "metrics.json").exists()  # it scored the result that was replaced
    assert (out / "notes.txt").read_text() == "mine"  # not the result's: never touched


def test_overwrite_keeps_the_earlier_result_when_the_new_one_cannot_be_written_and_never_takes_foreign_pictures(
    reference_video, tmp_path, capsys, monkeypatch
):
    from motionclone.backend import results
    from motionclone.backend.cli import EXIT_BACKEND, EXIT_PARAMETERS, main

    out = tmp_path / "out"
    assert main(tiny_generate(reference_video, out, 8)) == 0
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results, "write_mp4", full_disk)
    capsys.readouterr()
    assert main([*tiny_generate(reference_video, out, 4), "--overwrite"]) == EXIT_BACKEND
    assert "No space left on device" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before  # as it was
    monkeypatch.undo()
    replace = os.replace

    def interrupted_before_the_video(source, target):
        if str(target).endswith("result.mp4"):
            raise KeyboardInterrupt  # Ctrl+C while the new frames are already in place
        replace(source, target)

    monkeypatch.setattr(results.os, "replace", interrupted_before_the_video)
    assert main([*tiny_generate(reference_video, out, 4), "--overwrite"]) != 0
    monkeypatch.undo()
    assert (out / "result.json").is_file()  # still a result: --overwrite can replace it
    assert main([*tiny_generate(reference_video, out, 4), "--overwrite"]) == 0
    assert sorted(path.name for path in (out / "frames").iterdir()) == [f"{i:04d}.png" for i in range(1, 5)]

    pictures = tmp_path / "my-shot"  # somebody's own numbered pictures, with no result.json or result.mp4
    write_png_sequence(make_moving_square_clip(4, 64, 64), pictures / "frames")
    mine = {path: path.read_bytes() for path in pictures.rglob("*") if path.is_file()}
    assert main([*tiny_generate(pictures / "frames", pictures, 4), "--overwrite"]) == EXIT_PARAMETERS
    assert "are not a MotionClone result" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in pictures.rglob("*") if path.is_file()} == mine


def test_generate_shows_no_weight_loading_bar_with_no_progress_or_off_a_terminal(reference_video, tmp_path):
    """transformers draws its own "Loading weights" bar; it stays out of pipes and logs."""
    arguments = ["generate", "--reference", str(reference_video), "--prompt", "a red ball rolling right on the grass"]
    arguments += ["--frames", "2", "--steps", "2", "--guidance-steps", "1", "--out", str(tmp_path / "out")]
    result = run_cli(*arguments, cwd=tmp_path)  # the blocks model: real weights loaded through transformers
    assert result.returncode == 0, result.stderr
    assert "Loading weights" not in result.stderr and "it/s" not in result.stderr


def test_submit_refuses_bad_input_before_it_waits_for_a_server(tmp_path, capsys):
    """No server listens here: each mistake is reported at once, with its own exit code, not as an unreachable server
    after the timeout."""
    import time

    from motionclone.backend.cli import EXIT_BACKEND, EXIT_PARAMETERS, EXIT_VIDEO, main

    reference = write_mp4(make_moving_square_clip(8, 64, 64), tmp_path / "reference.mp4")
    base = ["submit", "--server", "tcp://127.0.0.1:9", "--timeout", "30", "--prompt", "a fox", "--no-progress"]
    for extra, code, message in [
        (["--reference", str(tmp_path / "missing.mp4")], EXIT_VIDEO, "missing.mp4"),
        (["--reference", str(reference), "--width", "60"], EXIT_PARAMETERS, "`width`"),
        (["--reference", str(reference), "--condition", str(tmp_path / "nope.png")], EXIT_VIDEO, "nope.png"),
    ]:
        started = time.monotonic()
        assert main([*base, *extra, "--out", str(tmp_path / "out")]) == code, extra
        assert time.monotonic() - started < 10, extra
        assert message in capsys.readouterr().err
    # Fewer steps than the camera config guides is wrong with that config only: the server's config decides.
    out = ["--reference", str(reference), "--steps", "30", "--out", str(tmp_path / "out")]
    unreachable_at_once = [*base[:4], "1", *base[5:]]
    assert main([*unreachable_at_once, *out]) == EXIT_BACKEND  # got as far as looking for the server
    assert "guidance_steps" not in capsys.readouterr().err
    for extra in (["--guidance-steps", "40"], ["--config", "camera"]):
        assert main([*base, *out, *extra]) == EXIT_PARAMETERS, extra
        assert "`guidance_steps` must be between 0 and 30" in capsys.readouterr().err, extra
    taken = tmp_path / "taken"
    write_result_folder(make_moving_square_clip(2, 64, 64), {}, taken, fps=8.0)
    for command in ([*base, "--reference", str(reference)], ["fetch", "0" * 32, "--server", "tcp://127.0.0.1:9"]):
        started = time.monotonic()
        assert main([*command, "--out", str(taken)]) == EXIT_PARAMETERS, command[0]
        assert time.monotonic() - started < 10, command[0]
        assert "already holds a result" in capsys.readouterr().err


def test_an_out_folder_that_cannot_be_written_and_bad_server_flags_are_refused_before_any_work(
    reference_video, tmp_path, capsys, monkeypatch
):
    from motionclone.backend import generate
    from motionclone.backend.cli import EXIT_PARAMETERS, main

    monkeypatch.setattr(generate, "load_preset", lambda *args, **kwargs: pytest.fail("loaded the model"))
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    frames_file = tmp_path / "frames-taken"
    frames_file.mkdir()
    (frames_file / "frames").write_text("not a folder")
    for out, message in [
        (a_file, "a-file is a file, not a folder"),
        (a_file / "below", "a-file is a file, so"),
        (frames_file, "frames is a file, not a folder"),
    ]:
        assert main(tiny_generate(reference_video, out, 4)) == EXIT_PARAMETERS, out
        error = capsys.readouterr().err
        assert message in error and "(set with --out)" in error
    # A parameter the engine refuses is named before a model loads, whatever the preset.
    assert main([*tiny_generate(reference_video, tmp_path / "new", 4), "--width", "100"]) == EXIT_PARAMETERS
    assert "`width` must be a multiple of 8" in capsys.readouterr().err
    for command in (["status"], ["fetch", "0" * 32, "--out", str(tmp_path / "fetched")]):
        assert main([*command, "--server", "localhost:5555"]) == EXIT_PARAMETERS, command
        assert "`--server` must look like 'tcp://HOST:PORT'" in capsys.readouterr().err
        assert main([*command, "--server", "tcp://127.0.0.1:108897"]) == EXIT_PARAMETERS, command
        assert "`--server` port must be 0 to 65535, got 108897" in capsys.readouterr().err
        missing_key = str(tmp_path / "missing.key")
        assert main([*command, "--server", "tcp://127.0.0.1:9", "--server-key", missing_key]) == EXIT_PARAMETERS
        assert "`--server-key`" in capsys.readouterr().err


def test_devices_folders_and_numbers_that_cannot_work_are_refused_naming_the_flag_before_any_work(
    reference_video, tmp_path, capsys, monkeypatch
):
    from motionclone.backend import generate
    from motionclone.backend.cli import EXIT_PARAMETERS, EXIT_VIDEO, main

    monkeypatch.setattr(generate, "load_preset", lambda *args, **kwargs: pytest.fail("loaded the model"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # a machine without CUDA, even on a GPU machine
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    run = [*tiny_generate(reference_video, tmp_path / "new", 4)]
    for extra, code, message in [
        (["--device", "cuda"], EXIT_PARAMETERS, "`--device` 'cuda' asks for CUDA, which this machine's torch"),
        (["--device", "toaster"], EXIT_PARAMETERS, "`--device` must be cpu, cuda or cuda:N"),
        (["--cache-dir", str(a_file)], EXIT_PARAMETERS, "`--cache-dir` "),
        (["--condition", str(tmp_path / "nope.png")], EXIT_VIDEO, "--condition"),
    ]:
        assert main([*run, *extra]) == code, extra
        assert message in capsys.readouterr().err, extra
    serve = ["serve", "--preset", "tiny", "--device", "cpu"]
    for extra, message in [
        (["--port", "0", "--results-dir", str(a_file)], "`--results-dir` "),
        (["--port", "0", "--keys", str(tmp_path / "no-keys")], "`--keys` "),
        (["--port", "0", "--max-queue", "0"], "`--max-queue` must be at least 1"),
        (["--port", "0", "--preview-every", "-1"], "`--preview-every` must be at least 0"),
        (["--port", "0", "--retention-hours", "nan"], "`--retention-hours` must be a number above 0"),
        (["--bind", "tcp://127.0.0.1:99999"], "`--bind` port must be 0 to 65535"),
    ]:
        assert main([*serve, *extra]) == EXIT_PARAMETERS, extra
        assert message in capsys.readouterr().err, extra
    for command in (["status", "--timeout", "0"], ["fetch", "0" * 32, "--out", str(tmp_path / "f"), "--wait", "-1"]):
        with pytest.raises(SystemExit) as refused:  # argparse's own refusal
            main(command)
        assert refused.value.code == EXIT_PARAMETERS and "must be a number of seconds" in capsys.readouterr().err


def test_keygen_checks_every_name_first_and_adds_clients_to_a_folder_it_made_before(tmp_path, capsys):
    from motionclone.backend.cli import EXIT_PARAMETERS, main

    keys = tmp_path / "keys"
    assert main(["keygen", str(keys), "--client", "studio", "--client", "../evil"]) == EXIT_PARAMETERS
    assert "`--client`" in capsys.readouterr().err and not keys.exists()  # nothing written
    assert main(["keygen", str(keys), "--client", "studio"]) == 0
    server_key = (keys / "server.key").read_bytes()
    assert main(["keygen", str(keys), "--client", "laptop"]) == 0
    assert (keys / "server.key").read_bytes() == server_key  # kept: the studio's client still connects
    assert sorted(path.name for path in (keys / "clients").iterdir()) == [
        "laptop.key",
        "laptop.key_secret",
        "studio.key",
        "studio.key_secret",
    ]
    assert main(["keygen", str(keys), "--client", "laptop"]) == EXIT_PARAMETERS
    assert "exists already" in capsys.readouterr().err
    assert main(["keygen", str(tmp_path / "twice"), "--client", "a", "--client", "A"]) == EXIT_PARAMETERS
    assert "given more than once" in capsys.readouterr().err and not (tmp_path / "twice").exists()
    (keys / "server.key_secret").unlink()  # half a server key pair: no client could be admitted with it
    assert main(["keygen", str(keys), "--client", "tablet"]) == EXIT_PARAMETERS
    assert "holds server.key but not server.key_secret" in capsys.readouterr().err


def test_submit_parameters_take_what_the_server_announces_where_the_flags_are_silent():
    from motionclone.backend.cli import build_parser, params_from_args

    base = ["submit", "--reference", "r.mp4", "--prompt", "a red ball", "--out", "out"]
    announced = {"native_size": {"num_frames": 12, "height": 32, "width": 48}, "config": "blocks"}
    silent = params_from_args(build_parser(["submit"]).parse_args(base), "tiny", **announced)
    assert silent == config_params("blocks", num_frames=12, height=32, width=48)
    flags = build_parser(["submit"]).parse_args([*base, "--width", "64", "--config", "object"])
    assert params_from_args(flags, "tiny", **announced) == config_params("object", num_frames=12, height=32, width=64)


def config_params(config: str, **values):
    from motionclone.backend.engine import MotionCloneParams

    return MotionCloneParams.from_config(config, prompt="a red ball", **values)


def test_a_mistyped_option_is_named_with_the_nearest_one(capsys):
    from motionclone.backend.cli import EXIT_PARAMETERS, main

    for typed, answer in [
        (["--promt", "a fox"], "it has no option --promt: did you mean --prompt?"),
        (["--prompt", "a fox", "--seeds=3"], "it has no option --seeds: did you mean --seed?"),
        (["--prompt", "a fox", "--zzzz"], "it has no option --zzzz; `motionclone generate --help` lists them"),
    ]:
        assert main(["generate", "--reference", "clip.mp4", "--out", "out", *typed]) == EXIT_PARAMETERS
        assert f"motionclone generate: error: {answer}" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an unambiguous prefix (--ou for --out) is still for argparse to take
        main(["fetch", "--ou", "x"])
    assert "the following arguments are required: job_id" in capsys.readouterr().err


def test_a_cuda_device_this_machine_lacks_is_named_with_the_ones_it_has(monkeypatch):
    from motionclone.backend.devices import unusable_device

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert unusable_device("cuda:3") == "'cuda:3': this machine has 2 CUDA devices: use cuda:0 to cuda:1, or cpu"
    assert unusable_device("cuda:1") is None
