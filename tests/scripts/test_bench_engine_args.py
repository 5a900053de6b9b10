"""scripts/bench_engine.py's arguments: only a clip of one context window is timed (argument parsing only)."""

import pytest

from tests.script_modules import load_script

bench = load_script("bench_engine")


def test_frames_up_to_one_context_window_are_accepted() -> None:
    assert bench.CONTEXT_LENGTH == 16
    assert bench.parse_args(["--frames", "16"]).frames == 16
    assert bench.parse_args([]).frames == 16


@pytest.mark.parametrize("frames", ["17", "64", "0", "-1"])
def test_frames_beyond_one_context_window_are_refused(frames: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Past one window `denoise` reports each window pass, so per-step times would mix guided and unguided steps.
    with pytest.raises(SystemExit) as raised:
        bench.parse_args(["--frames", frames])
    assert raised.value.code == 2
    assert f"--frames must be 1 to 16 (one context window); got {frames}" in capsys.readouterr().err
