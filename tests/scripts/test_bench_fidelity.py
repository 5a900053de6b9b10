"""scripts/bench_fidelity.py and its reference set (motionclone.backend.evaluation.benchmark_references).

The end-to-end test runs the script's `main` in this process on the `tiny` preset (random weights: the numbers mean
nothing, the files and fields are what is checked) with two procedural references, 2 steps and 8 frames. Blender is
only used in a child process (the script's own renderer), so no bpy state is shared with other tests.
"""

import ast
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from motionclone.backend.evaluation import benchmark_references as refs
from motionclone.backend.models.blocks import BLOCKS_MODEL_DIR
from motionclone.backend.training.data import (
    _EXCLUDED_COLOURS,
    CAPTION_VOCABULARY,
    MAX_CAPTION_CHARS,
    render_clip,
    sample_clip_spec,
)
from motionclone.backend.video_io import read_clip
from tests.script_modules import load_script

ROOT = Path(__file__).resolve().parents[2]
BLENDER_HELPER = ROOT / "scripts" / "bench_blender_render.py"
# One thread: with torch's default (every core) a busy machine can make the run 50x slower (threads wait on each other).
QUICK = [
    "--preset",
    "tiny",
    "--steps",
    "2",
    "--guidance-steps",
    "1",
    "--frames",
    "8",
    "--device",
    "cpu",
    "--threads",
    "1",
]
PICKED = ("ball_line", "cube_bounce")


bench = load_script("bench_fidelity")
PROCEDURAL = [r for r in refs.REFERENCES if r.source == "procedural"]


# ---- the script end to end -------------------------------------------------------------------------------------------
def test_quick_run_on_tiny_writes_every_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = [*QUICK, "--no-blender", "--set", "cfg_scale=3", "--out", str(out)]
    for name in PICKED:
        argv += ["--only", name]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("seed=2025") == 4  # one progress line per generation: 2 references x 2 weights

    report = json.loads((out / "fidelity.json").read_text())
    settings = report["settings"]
    assert settings["preset"] == "tiny" and settings["config"] == "blocks"
    assert settings["steps"] == 2 and settings["guidance_steps"] == 1 and settings["num_frames"] == 8
    assert settings["weights"] == {"unguided": 0.0, "guided": 4000.0}  # 0 and the blocks config's weight
    assert settings["seeds"] == [2025]
    assert settings["reference_set"]["selected"] == list(PICKED)
    assert settings["config_values"]["motion_guidance_weight"] == 4000.0
    assert settings["overrides"] == {"cfg_scale": 3} and settings["parameters"]["cfg_scale"] == 3
    assert {"processor", "cpu_count", "torch"} <= set(report["machine"])
    assert {"grid", "region", "moving_fraction", "tracker"} <= set(report["evaluation"])
    assert [e["name"] for e in report["references"]] == list(PICKED)
    for entry in report["references"]:
        assert [(r["weight"], r["seed"]) for r in entry["runs"]] == [(0.0, 2025), (4000.0, 2025)]
        for run in entry["runs"]:
            assert 0.0 <= run["motion_fidelity"] <= 1.0
            assert run["motion_fidelity_status"] in ("measured", "degenerate")
            assert run["seconds"] > 0
            assert run["colour_status"] == "measured" and run["class_status"] == "measured"
            assert (Path(run["result_dir"]) / "evaluation" / "metrics.json").is_file()
        summary = entry["summary"]
        assert summary["gain"] == pytest.approx(summary["mf_guided"] - summary["mf_unguided"])
        assert {"colour_guided", "class_guided"} <= set(summary)
    summary = report["summary"]
    assert summary["references"] == 2 and summary["full_set"] is False
    assert len(summary["targets"]) == 3 and all(isinstance(t["passed"], bool) for t in summary["targets"])

    markdown = (out / "fidelity.md").read_text()
    assert "Changed from the config in both runs (`--set`): `cfg_scale=3`." in markdown
    assert "| reference | prompt | MF unguided | MF guided | gain | colour (guided) | class (guided) |" in markdown
    assert "a red ball rolling right" in markdown and markdown.count("PASS") + markdown.count("FAIL") >= 3

    picture = np.asarray(Image.open(out / "fidelity.png"))
    rows = bench.PICTURE_LABEL + 2 * (bench.PICTURE_LABEL + bench.PICTURE_TILE + bench.PICTURE_GAP)
    assert picture.shape[0] == rows + bench.PICTURE_GAP and picture.shape[1] > 12 * bench.PICTURE_TILE
    for name in PICKED:
        assert len(list((out / "references" / name / "frames").glob("*.png"))) == refs.REFERENCE_FRAMES
        assert (out / "references" / name / "reference.mp4").is_file()


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        bench.main(["--only", "no_such_reference", "--out", str(tmp_path)])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        bench.main(["--preset", "no_such_preset", "--out", str(tmp_path)])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:  # another model folder exists only for the blocks preset
        bench.main(["--preset", "tiny", "--model-folder", str(tmp_path), "--out", str(tmp_path)])
    assert raised.value.code == 2


def test_a_model_folder_is_the_model_the_report_describes(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "training.json").write_text(json.dumps({"recipe": {"motion": {"steps": 1500}}, "final_losses": {}}))
    args = bench.build_parser().parse_args(["--model-folder", str(tmp_path), "--out", str(tmp_path / "out")])
    settings = bench.settings_from_args(args)
    assert settings.model_folder == tmp_path.resolve()
    assert bench.model_training("blocks", settings.model_folder)["recipe"] == {"motion": {"steps": 1500}}
    shipped = json.loads((BLOCKS_MODEL_DIR / "training.json").read_text())
    assert bench.model_training("blocks", None)["recipe"] == shipped["recipe"]
    loaded = []
    monkeypatch.setattr(bench, "load_preset", lambda *args, **options: loaded.append((args, options)))
    bench.load_model(settings)
    assert loaded == [(("blocks", settings.device), {"folder": tmp_path.resolve()})]


def test_steps_alone_keep_the_configs_share_of_guided_steps(tmp_path: Path) -> None:
    args = bench.build_parser().parse_args(["--steps", "10", "--out", str(tmp_path), "--no-blender"])
    settings = bench.settings_from_args(args)
    params = bench.make_params(settings, "a red ball rolling right on the grass", 7, 0.0)
    assert (params.num_inference_steps, params.guidance_steps) == (10, 5)  # blocks: 20 of 40
    assert (params.num_frames, params.height, params.width) == (16, 64, 64)  # the blocks model's native size
    assert [r.source for r in settings.references] == ["procedural"] * len(PROCEDURAL)


def test_set_changes_a_parameter_in_both_runs_but_not_the_benchmarks_own(tmp_path: Path) -> None:
    blocks = '["up_blocks.1", "up_blocks.2"]'
    args = bench.build_parser().parse_args(
        ["--set", f"motion_guidance_blocks={blocks}", "--set", "cfg_scale=3", "--out", str(tmp_path)]
    )
    settings = bench.settings_from_args(args)
    assert settings.overrides == {"motion_guidance_blocks": ["up_blocks.1", "up_blocks.2"], "cfg_scale": 3}
    for weight in (0.0, 4000.0):
        params = bench.make_params(settings, "a red ball rolling right on the grass", 7, weight)
        assert params.motion_guidance_blocks == ("up_blocks.1", "up_blocks.2") and params.cfg_scale == 3
        assert (params.seed, params.motion_guidance_weight) == (7, weight)  # the benchmark's own values win
    for fixed in ("seed=3", "motion_guidance_weight=9", "no_equals_sign"):
        with pytest.raises(SystemExit) as raised:
            bench.main(["--set", fixed, "--out", str(tmp_path)])
        assert raised.value.code == 2


def test_the_same_weight_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Both runs would share one result folder, and the summary would count each run as guided and unguided.
    # ["2", "2.0000001"] share the folder name w2; ["0", "-0"] are one weight under two names.
    for weights in (["2", "2"], ["2", "2.0000001"], ["0", "-0"]):
        with pytest.raises(SystemExit) as raised:
            bench.main(["--weights", *weights, "--out", str(tmp_path)])
        assert raised.value.code == 2
        assert "--weights must be two different weights" in capsys.readouterr().err
    args = bench.build_parser().parse_args(["--weights", "0", "2", "--out", str(tmp_path)])
    assert bench.settings_from_args(args).weights == (0.0, 2.0)


@pytest.mark.parametrize("key", ["num_frames", "height", "width"])
def test_set_of_the_size_is_refused(key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # make_params sets the size itself (--frames, the native height and width), so --set would be ignored silently.
    with pytest.raises(SystemExit) as raised:
        bench.main(["--set", f"{key}=32", "--out", str(tmp_path)])
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert f"--set {key} is not allowed" in error and "--frames" in error


def evaluation_report(value: float, status: str, result_cause: str | None = None) -> dict:
    """The parts of an `evaluate` report the benchmark reads."""
    reason = {"reason": "the reference has no tracks that take part (...): nothing to compare"}
    fidelity = {
        "status": status,
        **(reason if status == "degenerate" else {}),
        "tracks": {"reference": {"none_used_because": None}, "result": {"none_used_because": result_cause}},
        "tracker": {"name": "opencv-lk-pyramidal"},
    }
    measured = {"value": 1.0, "status": "measured"}
    return {
        "motion_fidelity": value,
        "motion_fidelity_released": value,
        "metrics": {"motion_fidelity": fidelity, "colour_adherence": measured, "class_adherence": measured},
        "warnings": [],
    }


def bench_run(weight: float, report: dict) -> dict:
    return {"weight": weight, "seed": 2025, "seconds": 1.0, **bench.evaluation_record(report)}


def test_degenerate_runs_are_listed_not_averaged_and_results_without_tracks_count_as_0() -> None:
    weights = (0.0, 4000.0)
    still_reference = [bench_run(w, evaluation_report(0.0, "degenerate")) for w in weights]
    lost = "no track followed through all frames"
    flashing = [
        bench_run(0.0, evaluation_report(0.4, "measured")),
        bench_run(4000.0, evaluation_report(0.0, "measured", lost)),
    ]
    entries = [
        {"name": name, "prompt": "p", "source": "procedural", "motion": "m", "reference_caption": "c",
         "figure_height_fraction": None, "runs": runs, "summary": bench.summarise_reference(runs, weights)}
        for name, runs in (("still_reference", still_reference), ("flashing", flashing))
    ]  # fmt: skip
    assert still_reference[0]["motion_fidelity_status"] == "degenerate"
    degenerate = entries[0]["summary"]
    assert degenerate["mf_unguided"] is None and degenerate["gain"] is None and degenerate["degenerate_runs"] == 2
    flashed = entries[1]["summary"]
    assert flashed["mf_guided"] == 0.0 and flashed["gain"] == pytest.approx(-0.4)  # a real failure: counted

    summary = bench.summarise(entries, 1.0)
    assert summary["mean_mf_unguided"] == pytest.approx(0.4) and summary["mean_gain"] == pytest.approx(-0.4)
    assert [(r["reference"], r["weight"]) for r in summary["degenerate_runs"]] == [
        ("still_reference", 0.0),
        ("still_reference", 4000.0),
    ]
    assert summary["results_without_tracks"] == [
        {"reference": "flashing", "weight": 4000.0, "seed": 2025, "reason": lost}
    ]
    report = {
        "created": "now",
        "settings": {"weights": {"unguided": 0.0, "guided": 4000.0}, "seeds": [2025], "preset": "tiny",
                     "config": "blocks", "steps": 2, "guidance_steps": 1, "num_frames": 8, "width": 64,
                     "height": 64, "device": "cpu"},
        "machine": {"processor": "x86_64", "cpu_count": 2, "torch": "2"},
        "model": {"description": {}},
        "references": entries,
        "summary": summary,
    }  # fmt: skip
    markdown = bench.markdown(report)
    assert "Degenerate MF, left out of the means" in markdown
    assert "- still_reference, weight 0, seed 2025: the reference has no tracks that take part" in markdown
    assert "- still_reference, weight 4000, seed 2025:" in markdown
    assert "MF 0 because no result track took part, counted in the means" in markdown
    assert f"- flashing, weight 4000, seed 2025: {lost}" in markdown
    assert "(degenerate, left out of the means)" in bench.describe_mf(still_reference[0])


def test_the_picture_shows_the_reference_frames_the_result_was_scored_against(tmp_path: Path) -> None:
    from motionclone.backend.results import write_result_folder

    reference = tmp_path / "reference"
    reference.mkdir()
    for index in range(20):  # each frame's grey level names it
        Image.fromarray(np.full((16, 24, 3), index * 10, dtype=np.uint8)).save(reference / f"{index:04d}.png")
    frames = np.zeros((8, 16, 16, 3), dtype=np.uint8)
    metadata = {"parameters": {"num_frames": 8, "height": 16, "width": 16, "frame_sampling": "step", "frame_step": 2}}
    write_result_folder(frames, metadata, tmp_path / "result", fps=8)
    shown = bench.scored_reference_frames(reference, tmp_path / "result")
    assert shown.shape == (8, 16, 16, 3)
    np.testing.assert_array_equal(shown[:, 8, 8, 0] // 10, np.arange(0, 16, 2))  # every 2nd frame, as scored


# ---- the reference set -----------------------------------------------------------------------------------------------
def test_set_has_six_procedural_and_two_blender_references_covering_the_motions() -> None:
    assert len(refs.REFERENCES) >= 8 and len(set(refs.reference_names())) == len(refs.REFERENCES)
    assert len(PROCEDURAL) == 6
    assert sorted(r.scene_kind for r in refs.REFERENCES if r.source == "blender") == ["camera", "object"]
    covered = {(r.spec.subject, r.spec.motion, r.spec.camera) for r in PROCEDURAL}
    assert ("ball", "line", "static") in covered and ("figure", "walk", "static") in covered
    assert ("cube", "bounce", "static") in covered
    assert any(s == "car" and m in ("zigzag", "arc") for s, m, _ in covered)
    assert any(m == "still" and c.startswith("pan") for _, m, c in covered)
    assert any(m == "depth" or c.startswith("zoom") for _, m, c in covered)


def test_procedural_references_are_hand_picked_from_another_seed_than_training() -> None:
    # TRAINING_SEED must be the data seed the shipped model records, or the "unseen" claim means nothing.
    shipped = json.loads((BLOCKS_MODEL_DIR / "training.json").read_text())
    assert shipped["recipe"]["data_seed"] == refs.TRAINING_SEED
    assert refs.REFERENCE_SEED != refs.TRAINING_SEED
    # Specs are written out, not sampled: their background seeds derive from REFERENCE_SEED, and none of them is a
    # background seed of the first training clips (a sampled spec draws its seed from the data seed's stream).
    seeds = [r.spec.seed for r in PROCEDURAL]
    assert len(set(seeds)) == len(seeds)
    training_seeds = {sample_clip_spec(np.random.default_rng([refs.TRAINING_SEED, i])).seed for i in range(300)}
    assert not training_seeds & set(seeds)


def test_prompts_use_the_training_grammar_with_another_colour_and_background() -> None:
    for reference in refs.REFERENCES:
        prompt, spec = reference.prompt, reference.prompt_spec
        assert len(prompt) <= MAX_CAPTION_CHARS
        assert set(prompt.split()) <= set(CAPTION_VOCABULARY), prompt
        assert spec.colour not in _EXCLUDED_COLOURS[spec.background], prompt  # never a low-contrast pair
        if reference.spec is not None:
            same = replace(reference.spec, colour=spec.colour, background=spec.background)
            assert same == spec, "only colour and background may differ from the reference"
            assert spec.colour != reference.spec.colour and spec.background != reference.spec.background
    assert refs.select_references(["blender_walk"])[0].prompt_spec.subject == "figure"


def test_procedural_subjects_stay_inside_the_frame() -> None:
    for reference in PROCEDURAL:
        masks = render_clip(reference.spec, refs.REFERENCE_SIZE, refs.REFERENCE_FRAMES).masks
        assert masks.any(axis=(1, 2)).all(), f"{reference.name}: the subject leaves the frame"
        edges = masks[:, 0].any() or masks[:, -1].any() or masks[:, :, 0].any() or masks[:, :, -1].any()
        assert not edges, f"{reference.name}: the subject touches the frame edge"


def test_reference_set_is_deterministic_and_cached(tmp_path: Path) -> None:
    first = refs.ensure_references(tmp_path / "a", PROCEDURAL)
    second = refs.ensure_references(tmp_path / "b", PROCEDURAL)
    for a, b in zip(first, second, strict=True):
        names = sorted(p.name for p in a.frames_dir.iterdir())
        assert names == sorted(p.name for p in b.frames_dir.iterdir()) and len(names) == refs.REFERENCE_FRAMES
        for name in names:
            assert (a.frames_dir / name).read_bytes() == (b.frames_dir / name).read_bytes()
        assert (a.folder / "reference.json").read_text() == (b.folder / "reference.json").read_text()
        np.testing.assert_array_equal(read_clip(a.frames_dir).frames, refs.render_procedural(a.reference))
    again = refs.ensure_references(tmp_path / "a", PROCEDURAL)
    assert all(c.reused for c in again)
    # A cached reference whose definition changed is rendered again.
    info_path = tmp_path / "a" / PROCEDURAL[0].name / "reference.json"
    info = json.loads(info_path.read_text())
    info["definition"]["set_version"] = -1
    info_path.write_text(json.dumps(info))
    refreshed = refs.ensure_references(tmp_path / "a", PROCEDURAL[:1])
    assert not refreshed[0].reused
    assert json.loads(info_path.read_text())["definition"]["set_version"] == refs.SET_VERSION


def test_blender_reference_needs_a_renderer(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs Blender"):
        refs.ensure_references(tmp_path, refs.select_references(["blender_camera"]))


def test_blender_renderer_runs_in_a_child_process_without_torch() -> None:
    tree = ast.parse(BLENDER_HELPER.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in ("torch", "motionclone", "diffusers")}
    walk = refs.select_references(["blender_walk"])[0]
    pixels, extra = bench.render_blender(walk, 32, 4)
    assert pixels.shape == (4, 32, 32, 3) and pixels.dtype == np.uint8
    assert pixels.std() > 5  # a render, not a blank frame
    height = extra["blender"]["figure_height_fraction"]
    assert 0.1 < height["min"] <= height["max"] < 0.6  # the demo figure is about a quarter of the frame high
