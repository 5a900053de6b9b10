"""Job states and progress stages, as the server sends them and every client reads them. No torch, no bpy.

A job is `queued`, then `running`, and ends `done`, `failed` or `cancelled`. While it runs, `progress` messages name
one of `STAGES`, in that order. `overall_progress` turns a stage's step into one 0-1 figure for a single progress
bar, with shares that fit the method: the inversion-based method spends a large part of its time inverting the
reference (its `extract` stage), the single-step method almost none.
"""

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
JOB_STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
ACTIVE_STATES = (QUEUED, RUNNING)
FINAL_STATES = (DONE, FAILED, CANCELLED)

PREPARE, EXTRACT, DENOISE, DECODE = "prepare", "extract", "denoise", "decode"
STAGES = (PREPARE, EXTRACT, DENOISE, DECODE)

# (start, end) of each stage on the 0-1 bar. Single-step: one partial forward to extract, then N denoising steps.
# Inversion: about 1000 inversion forwards against about 500 steps of 2-4 forwards each, so a third for `extract`.
_SHARES = {
    "single-step": {PREPARE: (0.0, 0.02), EXTRACT: (0.02, 0.05), DENOISE: (0.05, 0.95), DECODE: (0.95, 1.0)},
    "inversion": {PREPARE: (0.0, 0.01), EXTRACT: (0.01, 0.35), DENOISE: (0.35, 0.97), DECODE: (0.97, 1.0)},
}


def overall_progress(stage: str, step: int, total: int, motion_source: str = "single-step") -> float:
    """The whole job's progress, 0 to 1, at `step` of `total` in `stage` (an unknown stage or method counts as
    the single-step method's share, or the whole bar)."""
    shares = _SHARES.get(motion_source, _SHARES["single-step"])
    low, high = shares.get(stage, (0.0, 1.0))
    fraction = min(1.0, max(0.0, step / max(1, total)))
    return low + (high - low) * fraction
