"""The fixed reference set of the motion-fidelity benchmark (`scripts/bench_fidelity.py`) and its disk cache. No bpy.

Eight references the `blocks` model never saw in training:

- six procedural clips drawn by hand (not sampled) with the training generator (`training.data.render_clip`), their
  background seeds derived from `REFERENCE_SEED` (the training data used seed `TRAINING_SEED`): a ball on a line, a
  figure walking, a car zigzagging, a cube bouncing, a camera pan over a still car, and a cube moving towards the
  camera;
- two Workbench renders of the add-on's demo blockout (`blender_addon.demo_scene`): the walking figure ("object")
  and the moving camera ("camera"). Rendering needs Blender, so the caller passes a renderer (the benchmark script
  runs Blender in a child process; nothing here imports bpy).

Each reference carries the prompt the benchmark generates with: a caption of the training grammar
(`training.data.caption_for`), with the same subject class and motion as the reference but another colour and
background, so that motion must come from the reference and appearance from the prompt.

Cache layout, one folder per reference under the cache root::

    NAME/frames/0001.png ...   the frames, lossless (what generation and evaluation read)
    NAME/reference.mp4         the same frames as H.264, for people
    NAME/reference.json        the definition the frames were made from (reused only while it is unchanged)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..training.data import ClipSpec, caption_for, render_clip
from ..video_io import read_clip, write_mp4, write_png_sequence

SET_VERSION = 1  # bump when a definition changes: cached references of another version are re-rendered
REFERENCE_SEED = 20261130  # background seeds of the procedural references derive from this
TRAINING_SEED = 1  # the data seed the blocks model was trained on (backend/models/blocks_model/training.json)
REFERENCE_SIZE = 64  # the blocks model's native size: no resize between the reference and the model
REFERENCE_FRAMES = 16
REFERENCE_FPS = 8.0
SOURCES = ("procedural", "blender")

# Renders one Blender reference: (reference, size, frames) -> uint8 (frames, size, size, 3) and extra facts (figure
# size...) that go into reference.json.
BlenderRenderer = Callable[["BenchmarkReference", int, int], tuple[np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class BenchmarkReference:
    """One reference of the set.

    Attributes:
        name: short identifier (folder name, `--only` value).
        source: "procedural" (rendered from `spec`) or "blender" (the demo scene of kind `scene_kind`).
        motion: what moves, in words, for tables.
        prompt_spec: the prompt is `caption_for(prompt_spec)`: the training grammar, so every word is one the blocks
            model learned.
        spec: the procedural clip (None for Blender renders).
        scene_kind: the `demo_scene` kind (None for procedural clips).
    """

    name: str
    source: str
    motion: str
    prompt_spec: ClipSpec
    spec: ClipSpec | None = None
    scene_kind: str | None = None

    @property
    def prompt(self) -> str:
        """The prompt the benchmark generates with."""
        return caption_for(self.prompt_spec)

    @property
    def reference_caption(self) -> str | None:
        """The procedural reference's own caption (None for Blender renders, which have none)."""
        return caption_for(self.spec) if self.spec is not None else None

    def definition(self, size: int, frames: int) -> dict[str, Any]:
        """Everything the cached frames depend on, as JSON values."""
        return {
            "set_version": SET_VERSION,
            "name": self.name,
            "source": self.source,
            "spec": _spec_json(self.spec),
            "scene_kind": self.scene_kind,
            "size": size,
            "frames": frames,
        }


def _seed(index: int) -> int:
    """Background seed of procedural reference `index`: fixed, and unrelated to the training seed's streams."""
    return int(np.random.default_rng([REFERENCE_SEED, index]).integers(2**31 - 1))


def _spec(index: int, subject: str, colour: str, background: str, motion: str, camera: str, **rest: Any) -> ClipSpec:
    """A hand-picked spec; `rest` overrides direction, speed, start, scale and phase."""
    values: dict[str, Any] = {"direction": 1.0, "speed": 1.0, "start": (0.3, 0.8), "scale": 0.25, "phase": 0.5}
    values.update(rest)
    return ClipSpec(subject, colour, background, motion, camera, seed=_seed(index), **values)


def _procedural(name: str, motion: str, spec: ClipSpec, colour: str, background: str) -> BenchmarkReference:
    # The prompt keeps subject, motion, direction and camera, and changes colour and background.
    return BenchmarkReference(name, "procedural", motion, replace(spec, colour=colour, background=background), spec)


def _blender(name: str, kind: str, motion: str, prompt_spec: ClipSpec) -> BenchmarkReference:
    return BenchmarkReference(name, "blender", motion, prompt_spec, scene_kind=kind)


REFERENCES: tuple[BenchmarkReference, ...] = (
    _procedural(
        "ball_line",
        "ball rolling right on a straight line",
        _spec(0, "ball", "blue", "grass", "line", "static", speed=1.3, start=(0.2, 0.78), scale=0.22, phase=0.5),
        "red",
        "snow",
    ),
    _procedural(
        "figure_walk",
        "figure walking left",
        _spec(
            1, "figure", "green", "desert", "walk", "static", direction=-1.0, speed=1.1, start=(0.78, 0.86), scale=0.34
        ),
        "blue",
        "snow",
    ),
    _procedural(
        "car_zigzag",
        "car zigzagging right",
        _spec(2, "car", "yellow", "night", "zigzag", "static", speed=1.0, start=(0.25, 0.8), scale=0.3, phase=0.3),
        "red",
        "desert",
    ),
    _procedural(
        "cube_bounce",
        "cube bouncing right",
        _spec(3, "cube", "black", "water", "bounce", "static", speed=1.2, start=(0.25, 0.85), scale=0.22, phase=0.4),
        "red",
        "grass",
    ),
    _procedural(
        "car_pan",
        "parked car, camera pans left",
        _spec(4, "car", "purple", "desert", "still", "pan_left", speed=1.2, start=(0.33, 0.82), scale=0.3, phase=0.0),
        "white",
        "grass",
    ),
    _procedural(
        "cube_closer",
        "cube sliding towards the camera (depth)",
        _spec(5, "cube", "white", "night", "depth", "static", speed=1.0, start=(0.6, 0.66), scale=0.18, phase=0.5),
        "green",
        "desert",
    ),
    _blender(
        "blender_walk",
        "object",
        "Blender demo: figure walking right, static camera",
        _spec(6, "figure", "red", "blockout", "walk", "static"),
    ),
    # The demo camera trucks right while turning to keep the set centred: the boxes slide right across the frame
    # (and grow a little), which the training grammar calls a pan to the left.
    _blender(
        "blender_camera",
        "camera",
        "Blender demo: camera move over a static set",
        _spec(7, "cube", "yellow", "snow", "still", "pan_left"),
    ),
)


def reference_names() -> list[str]:
    """Names of the whole set, in order."""
    return [reference.name for reference in REFERENCES]


def select_references(only: Iterable[str] | None = None, blender: bool = True) -> list[BenchmarkReference]:
    """The references named in `only` (all when empty or None), in set order; Blender renders dropped unless blender.

    Raises:
        ValueError: an unknown name, or a selection that leaves nothing.
    """
    wanted = list(only or [])
    unknown = sorted(set(wanted) - set(reference_names()))
    if unknown:
        raise ValueError(f"unknown reference {unknown[0]!r}; the set is {', '.join(reference_names())}")
    chosen = [r for r in REFERENCES if (not wanted or r.name in wanted) and (blender or r.source != "blender")]
    if not chosen:
        raise ValueError("no reference left to run: check --only and --no-blender")
    return chosen


def render_procedural(
    reference: BenchmarkReference, size: int = REFERENCE_SIZE, frames: int = REFERENCE_FRAMES
) -> np.ndarray:
    """The frames of a procedural reference (uint8 (frames, size, size, 3)), rendered by the training generator."""
    if reference.spec is None:
        raise ValueError(f"{reference.name} is a {reference.source} reference, not a procedural one")
    return render_clip(reference.spec, size, frames).frames


@dataclass
class CachedReference:
    """A reference on disk.

    Attributes:
        reference: its definition.
        folder: its cache folder.
        info: reference.json's contents (definition, prompt, and what its renderer reported).
        reused: whether the frames were already there.
    """

    reference: BenchmarkReference
    folder: Path
    info: dict[str, Any] = field(default_factory=dict)
    reused: bool = False

    @property
    def frames_dir(self) -> Path:
        return self.folder / "frames"

    @property
    def video(self) -> Path:
        return self.folder / "reference.mp4"

    def frames(self) -> np.ndarray:
        """The cached frames, uint8 (frames, height, width, 3)."""
        return read_clip(self.frames_dir).frames


def load_cached(root: Path, reference: BenchmarkReference, size: int, frames: int) -> CachedReference | None:
    """The cached reference when its reference.json matches the current definition and all frames are there."""
    folder = Path(root) / reference.name
    try:
        info = json.loads((folder / "reference.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("definition") != reference.definition(size, frames):
        return None
    if len(list((folder / "frames").glob("*.png"))) != frames:
        return None
    return CachedReference(reference, folder, info, reused=True)


def store_reference(
    root: Path, reference: BenchmarkReference, pixels: np.ndarray, extra: dict[str, Any] | None = None
) -> CachedReference:
    """Write a reference's frames (PNGs and mp4) and reference.json, replacing whatever its folder held."""
    frames, size = int(pixels.shape[0]), int(pixels.shape[1])
    folder = Path(root) / reference.name
    if folder.exists():
        shutil.rmtree(folder)  # no stale frame of an older definition may survive
    write_png_sequence(pixels, folder / "frames")
    write_mp4(pixels, folder / "reference.mp4", fps=REFERENCE_FPS)
    info = {
        "definition": reference.definition(size, frames),
        "prompt": reference.prompt,
        "reference_caption": reference.reference_caption,
        "motion": reference.motion,
        "reference_seed": REFERENCE_SEED,
        "training_seed": TRAINING_SEED,
        **(extra or {}),
    }
    (folder / "reference.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return CachedReference(reference, folder, info)


def ensure_references(
    root: Path,
    references: Sequence[BenchmarkReference],
    blender_renderer: BlenderRenderer | None = None,
    size: int = REFERENCE_SIZE,
    frames: int = REFERENCE_FRAMES,
) -> list[CachedReference]:
    """Each reference from the cache, rendering (and caching) those missing or out of date.

    Raises:
        ValueError: a Blender reference must be rendered and no renderer was given.
    """
    cached = []
    for reference in references:
        hit = load_cached(root, reference, size, frames)
        if hit is None:
            if reference.source == "procedural":
                pixels, extra = render_procedural(reference, size, frames), {}
            elif blender_renderer is None:
                raise ValueError(f"{reference.name} needs Blender to render and no renderer was given")
            else:
                pixels, extra = blender_renderer(reference, size, frames)
            hit = store_reference(root, reference, pixels, extra)
        cached.append(hit)
    return cached


def _spec_json(spec: ClipSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    values = asdict(spec)
    values["start"] = list(spec.start)  # JSON has no tuples: compare like with like after a round trip
    return values
