"""scripts/make_sample_reference.py writes a clip that `motionclone evaluate` can track, as the README promises."""

import subprocess
import sys
from pathlib import Path

from motionclone.backend.evaluation import evaluate
from motionclone.backend.evaluation.benchmark_references import select_references
from motionclone.backend.video_io import read_clip

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_sample_reference.py"


def test_the_sample_clip_is_the_benchmark_reference_and_trackable(tmp_path):
    out = tmp_path / "clip.mp4"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--clip", "figure_walk", "--frames", "12", "--size", "96"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    (figure_walk,) = select_references(["figure_walk"], blender=False)
    assert figure_walk.reference_caption in run.stdout and f'--prompt "{figure_walk.prompt}"' in run.stdout
    assert read_clip(out).frames.shape == (12, 96, 96, 3)
    metrics = evaluate(out, out, out_dir=tmp_path / "evaluation")
    assert metrics["motion_fidelity"] > 0.9  # the flat square it replaced gave no track at all (0)
    bad = subprocess.run([sys.executable, str(SCRIPT), str(out), "--frames", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--frames must be between 2 and 256, got 1" in bad.stderr
