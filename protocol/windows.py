"""Context windows for long clips: which frames each UNet pass sees, and how overlapping passes are blended.

AnimateDiff's motion modules see at most 16 to 32 frames. A longer clip is denoised in windows of `length` frames
that overlap by `overlap` frames; every frame's prediction is the weighted mean of the windows that hold it, with
weights that fall off towards a window's edges, so neighbouring windows hand over smoothly.

Shared by the backend's engine and the Blender add-on (which shows the window count before a job is sent), so both
count the same windows. Standard library only.
"""

CONTEXT_SCHEDULES = ("uniform", "looped")


def context_windows(num_frames: int, length: int, overlap: int, schedule: str = "uniform") -> list[list[int]]:
    """The frame indices of each window, in the order they run.

    "uniform": windows start every `length - overlap` frames; the last one is moved back to end on the last frame,
    so every window is full. "looped": the windows keep their stride and the last ones wrap around to the first
    frames, for clips that loop. A clip no longer than `length` is one window of all its frames.

    Raises:
        ValueError: `length` below 2, `overlap` not in [0, length), or an unknown schedule.
    """
    if length < 2:
        raise ValueError(f"the window length must be at least 2, got {length}")
    if not 0 <= overlap < length:
        raise ValueError(f"the window overlap must be in [0, {length - 1}], got {overlap}")
    if schedule not in CONTEXT_SCHEDULES:
        raise ValueError(f"the window schedule must be one of {', '.join(CONTEXT_SCHEDULES)}, got {schedule!r}")
    if num_frames <= length:
        return [list(range(num_frames))]
    stride = length - overlap
    if schedule == "looped":
        starts = range(0, num_frames, stride)
        return [[(start + offset) % num_frames for offset in range(length)] for start in starts]
    starts = [*range(0, num_frames - length, stride), num_frames - length]
    return [list(range(start, start + length)) for start in starts]


def window_weights(length: int, overlap: int) -> list[float]:
    """The blending weight of each position in a window: 1 in the middle, falling linearly over the `overlap`
    frames at each edge (to 1 / (overlap + 1) on the first and last frame, never 0, so a frame that only one window
    holds keeps its prediction)."""
    ramp = overlap + 1
    return [min(1.0, (position + 1) / ramp, (length - position) / ramp) for position in range(length)]


def frame_weights(num_frames: int, windows: list[list[int]], overlap: int) -> list[list[float]]:
    """Each window's weight for each of its frames, normalised so that the weights of every frame sum to one."""
    raw = [window_weights(len(window), overlap) if len(windows) > 1 else [1.0] * len(window) for window in windows]
    totals = [0.0] * num_frames
    for window, weights in zip(windows, raw, strict=True):
        for frame, weight in zip(window, weights, strict=True):
            totals[frame] += weight
    missing = [frame for frame, total in enumerate(totals) if total == 0]
    if missing:
        raise ValueError(f"the windows leave frames {missing[:5]} uncovered")
    return [
        [weight / totals[frame] for frame, weight in zip(window, weights, strict=True)]
        for window, weights in zip(windows, raw, strict=True)
    ]


def sampled_count(frame_count: int, step: int) -> int:
    """How many frames "every `step`-th frame" takes from a clip of `frame_count` frames (the first one included)."""
    if step < 1:
        raise ValueError(f"the frame step must be at least 1, got {step}")
    return (frame_count - 1) // step + 1
