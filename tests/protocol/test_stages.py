"""Job states and progress stages shared by the server, the client and the add-on."""

import pytest

from motionclone.protocol import stages


def test_stages_run_in_order_and_fill_the_bar_without_going_back():
    for method in ("single-step", "inversion"):
        values = []
        for stage in stages.STAGES:
            values += [stages.overall_progress(stage, step, 4, method) for step in range(5)]
        assert values[0] == 0.0 and values[-1] == 1.0
        assert values == sorted(values), method


def test_the_inversion_method_gives_its_extraction_a_large_share():
    single = stages.overall_progress("extract", 1, 1) - stages.overall_progress("extract", 0, 1)
    inversion = stages.overall_progress("extract", 1, 1, "inversion") - stages.overall_progress(
        "extract", 0, 1, "inversion"
    )
    assert single < 0.05 < 0.3 < inversion


@pytest.mark.parametrize(("stage", "method"), [("teleport", "single-step"), ("denoise", "unknown-method")])
def test_unknown_names_stay_within_the_bar(stage, method):
    assert 0.0 <= stages.overall_progress(stage, 3, 2, method) <= 1.0


def test_states_partition_into_active_and_final():
    assert set(stages.ACTIVE_STATES) | set(stages.FINAL_STATES) == set(stages.JOB_STATES)
    assert not set(stages.ACTIVE_STATES) & set(stages.FINAL_STATES)
