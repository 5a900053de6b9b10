"""Which scene frames a job takes from the shot, at what frame rate, and what its windows cost. No bpy, no torch.

Two ways to take frames from a frame range (the panel's Frames setting):

- spread: `num_frames` frames spread evenly over the range (`reference.sample_frames`); the job plays at the scene's
  frame rate and the result strip holds each frame until the next sampled one.
- step: every Nth frame from the first (start, start + N, ...); the job's frame rate is the scene's divided by N, so
  "every 2nd frame of 24 fps" is a 12 fps clip, and the strip holds each result frame for N scene frames.

A job with more frames than the context window is denoised in overlapping windows (`protocol.windows`, the same
partition the backend's engine uses); the panel shows how many, and about how much work that is.
"""

from ._protocol import windows

MAX_FRAMES = 256  # the engine's limit for a windowed job (one pass of the SD-1.5 motion model takes 32 at most)
DEFAULT_CONTEXT_LENGTH = 16  # the engine's window length when a job does not send one
COST_BASELINE_FRAMES = 16  # the cost line compares with one 16-frame job, the official MotionClone clip


def step_frames(frame_start: int, frame_end: int, step: int) -> list[int]:
    """Every `step`-th scene frame of a range, from its first frame (the last one only if the step lands on it).

    Raises:
        ValueError: the range is empty, `step` is below 1, or it gives more than `MAX_FRAMES` frames; the message
            says what to change.
    """
    total = frame_end - frame_start + 1
    if total < 2:
        raise ValueError(
            f"The frame range {frame_start}-{frame_end} has {max(total, 0)} frames; a job needs at least 2: "
            "extend the frame range."
        )
    count = windows.sampled_count(total, step)
    if count > MAX_FRAMES:
        raise ValueError(
            f"Every {ordinal(step)} frame of {frame_start}-{frame_end} gives {count} frames, more than the "
            f"{MAX_FRAMES} a job can take: raise the frame step to {smallest_step(total)} or shorten the range."
        )
    if count < 2:
        raise ValueError(
            f"Every {ordinal(step)} frame of {frame_start}-{frame_end} gives only 1 frame: lower the frame step "
            "or extend the range."
        )
    return list(range(frame_start, frame_end + 1, step))


def smallest_step(total: int, limit: int = MAX_FRAMES) -> int:
    """The smallest frame step that takes at most `limit` frames from `total` frames."""
    # sampled_count(total, s) = (total - 1) // s + 1 <= limit  <=>  total - 1 < limit * s
    return max(1, (total - 1) // limit + 1)


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def fps_text(fps: float) -> str:
    """A frame rate as people write it: 24, 12.5, 29.97 (at most two decimals, no trailing zeros)."""
    return f"{fps:.2f}".rstrip("0").rstrip(".")


def step_text(count: int, step: int, scene_fps: float) -> str:
    """The panel's line for "every Nth frame", e.g. "60 frames: every 2nd of 24 fps = 12 fps"."""
    if step == 1:
        return f"{count} frames: every frame at {fps_text(scene_fps)} fps"
    return f"{count} frames: every {ordinal(step)} of {fps_text(scene_fps)} fps = {fps_text(scene_fps / step)} fps"


def check_windows(length: int, overlap: int) -> None:
    """Raise a user-facing ValueError when the window settings cannot partition a clip."""
    if not 0 <= overlap < length:
        raise ValueError(
            f"The window overlap ({overlap}) must be smaller than the window length ({length}): lower Overlap "
            "under Advanced."
        )


def check_inversion(num_frames: int, length: int, motion_source: str) -> None:
    """Raise a user-facing ValueError for a DDIM-inversion job that needs windows: the engine inverts one pass only."""
    if motion_source == "inversion" and num_frames > length:
        raise ValueError(
            f"DDIM inversion works on one window only, and this job has {num_frames} frames, more than the window "
            f"of {length}: use fewer frames (or a larger frame step), or the Single step motion source."
        )


def sends_windows(num_frames: int, length: int) -> bool:
    """Whether a job sends `context_length` and `context_overlap`.

    A job longer than the panel's window, or than the engine's default window, is windowed either way, so it says
    which windows it means. A job that fits in both leaves them out: one pass, and a backend without window support
    still takes it.
    """
    return num_frames > min(length, DEFAULT_CONTEXT_LENGTH)


def window_count(num_frames: int, length: int, overlap: int) -> int:
    """How many windows the engine runs for a clip (one when it fits in a window)."""
    return len(windows.context_windows(num_frames, length, overlap))


def relative_cost(num_frames: int, length: int, overlap: int) -> float:
    """The job's denoising work relative to one 16-frame job with the same steps.

    The UNet's work (every denoising step, every guidance backward pass) grows with the frames it sees per pass,
    and each window is one pass over `length` frames (one pass over all frames when the clip fits in a window), so
    the work is windows x frames per window, in units of 16 frames. The temporal attention, quadratic in the
    window length, is a small part of the UNet and is left out; so are the VAE and text encoder, which run once.
    """
    runs = windows.context_windows(num_frames, length, overlap)
    return sum(len(window) for window in runs) / COST_BASELINE_FRAMES


def window_text(num_frames: int, length: int, overlap: int) -> str | None:
    """The panel's line about windows, e.g. "5 windows of 16 (overlap 4), about 5.0x the work of one 16-frame
    job"; None when the clip fits in one window."""
    count = window_count(num_frames, length, overlap)
    if count < 2:
        return None
    cost = relative_cost(num_frames, length, overlap)
    return (
        f"{count} windows of {length} (overlap {overlap}), about {cost:.1f}x the work of one "
        f"{COST_BASELINE_FRAMES}-frame job"
    )
