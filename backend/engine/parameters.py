"""MotionClone generation parameters: defaults, the official configs as presets, and validation. No bpy.

Parity with the official code is the default; every deviation is a named field and ends up in the result metadata.
"""

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ...protocol.windows import CONTEXT_SCHEDULES
from ..errors import ParameterError
from ..video_io import FRAME_SAMPLING_RULES, MAX_FRAME_STEP, RESIZE_MODES
from .attention_capture import PRECISIONS as ATTENTION_PRECISIONS
from .groupnorm import MOTION_NORMS

OFFICIAL_NEGATIVE_PROMPT = (
    "bad anatomy, extra limbs, ugly, deformed, noisy, blurry, distorted, out of focus,  poorly drawn face, "
    "poorly drawn hands, missing fingers"
)
# The negative prompt of the image-to-video configs and of the old (inversion-method) ones: the same words in another
# order, which the tokenizer sees.
OFFICIAL_INVERSION_NEGATIVE_PROMPT = (
    "ugly, deformed, noisy, blurry, distorted, out of focus, bad anatomy, extra limbs, poorly drawn face, "
    "poorly drawn hands, missing fingers"
)
# The official t2v configs. `guidance_fraction` is the official yaml's `guidance_scale`: the fraction of the
# timestep range, at the noisy end, that the guided steps cover.
CONFIG_PRESETS: dict[str, dict[str, Any]] = {
    "camera": {"num_inference_steps": 100, "guidance_steps": 50, "guidance_fraction": 0.3},
    "object": {"num_inference_steps": 300, "guidance_steps": 180, "guidance_fraction": 0.4},
}

# Fast versions of the official configs, not official ones: 40% or less of the UNet work, chosen by measurement
# (scripts/bench_fast_configs.py, docs/performance.md). Fewer guided steps over the same timestep range would add up
# to less guidance, so the weight grows by G_official / G_fast; the ramps keep their share of the guided steps.
CONFIG_PRESETS["camera-fast"] = {
    "num_inference_steps": 40,
    "guidance_steps": 20,
    "guidance_fraction": 0.3,
    "motion_guidance_weight": 2000.0 * 50 / 20,
    "warm_up_steps": 4,
    "cool_down_steps": 4,
}
CONFIG_PRESETS["object-fast"] = {
    "num_inference_steps": 80,
    "guidance_steps": 48,
    "guidance_fraction": 0.4,
    "motion_guidance_weight": 2000.0 * 180 / 48,
    "warm_up_steps": 3,
    "cool_down_steps": 3,
}

# The official image-to-video configs (SparseCtrl RGB keyframes, scribble sketches).
CONFIG_PRESETS["i2v-rgb"] = {
    "num_inference_steps": 100,
    "guidance_steps": 40,
    "guidance_fraction": 0.3,
    "seed": 76739,
    "negative_prompt": OFFICIAL_INVERSION_NEGATIVE_PROMPT,
}
CONFIG_PRESETS["i2v-sketch"] = {
    "num_inference_steps": 200,
    "guidance_steps": 120,
    "guidance_fraction": 0.4,
    "seed": 76739,
    "negative_prompt": OFFICIAL_INVERSION_NEGATIVE_PROMPT,
}

# The built-in `blocks` model's config, not an official one: few steps, so that a 2-core CPU finishes a clip in about
# a minute, the official ramps scaled to 20 guided steps, and an empty negative prompt, since the official one is made
# of words that model never saw. The weight is the official one doubled (the guided block has 64 positions where
# SD-1.5's has 256); 8000 measured no better (docs/evaluation.md).
CONFIG_PRESETS["blocks"] = {
    "num_inference_steps": 40,
    "guidance_steps": 20,
    "guidance_fraction": 0.4,
    "motion_guidance_weight": 4000.0,
    "warm_up_steps": 4,  # the official 10 of 50 guided steps, scaled to 20
    "cool_down_steps": 4,
    "negative_prompt": "",
    "motion_norm": "cross-frame",  # its motion modules were trained in diffusers, whose GroupNorm spans the frames
    # Its motion prior alone changes frames 5-10 times as much as real motion does; noise shared between frames
    # steadies them, so the subject keeps its shape and the tracker can follow it (docs/evaluation.md).
    "noise_frame_correlation": 0.8,
    # A lower CFG scale than the official 7.5 lets the guidance move more than the prompt holds in place
    # (docs/evaluation.md: 7 of 8 references on each seed, against 6 and 8 at 7.5, and twice the mean gain).
    "cfg_scale": 4.0,
    # It draws its subject where one patch of the shared noise lies, wherever that is; moving that patch along the
    # reference subject's path makes the subject travel it (docs/evaluation.md: guided MF 0.52 against 0.34, colour
    # adherence 0.72 against 0.51).
    "subject_placement": "reference-path",
}

# The five example configs of the inversion-based method (paper v1-v3, official code up to `370558ee`).
# Their inversion prompt and object pair describe the official example videos: documented defaults the user overrides.
_INVERSION_COMMON: dict[str, Any] = {
    "motion_source": "inversion",
    "frame_sampling": "interval",  # the old video_preprocess rule
    "negative_prompt": OFFICIAL_INVERSION_NEGATIVE_PROMPT,
    "inversion_steps": 1000,
    "inversion_guidance_blocks": ("up_blocks.1", "up_blocks.2"),
    "inversion_block_weights": (20000.0, 10000.0),
    "warm_up_steps": 10,
    "semantic_example_threshold": 0.3,
    "semantic_app_threshold": 0.3,
}
CONFIG_PRESETS.update(
    {
        "inversion-astronaut": {
            **_INVERSION_COMMON,
            "num_inference_steps": 500,
            "guidance_steps": 300,
            "cool_down_steps": 0,
            "semantic_guidance_blocks": ("up_blocks.1", "up_blocks.2"),
            "semantic_block_weights": (500.0, 0.0),
            "inversion_prompt": "Astronaut, walking, on the Mars surface",
            "semantic_object_pair": ("Astronaut", "Hunter"),
        },
        "inversion-fox": {
            **_INVERSION_COMMON,
            "num_inference_steps": 500,
            "guidance_steps": 300,
            "cool_down_steps": 0,
            "semantic_guidance_blocks": ("up_blocks.1", "up_blocks.2"),
            "semantic_block_weights": (500.0, 0.0),
            "inversion_prompt": "Fox, moves its head, in the wild",
            "semantic_object_pair": ("Fox", "Cat"),
        },
        "inversion-street": {
            **_INVERSION_COMMON,
            "num_inference_steps": 200,
            "guidance_steps": 120,
            "cool_down_steps": 0,
            "semantic_guidance_blocks": ("up_blocks.1",),
            "semantic_block_weights": (500.0,),
            "inversion_prompt": "Busy urban street, many buildings on both sides, crossings",
            "semantic_object_pair": ("street", "city-state"),
        },
        "inversion-walk": {
            **_INVERSION_COMMON,
            "num_inference_steps": 200,
            "guidance_steps": 120,
            "cool_down_steps": 10,
            "semantic_guidance_blocks": ("up_blocks.1", "up_blocks.2"),
            "semantic_block_weights": (400.0, 200.0),
            "semantic_example_threshold": 0.2,
            "inversion_prompt": "Astronaut, walks, in the dreamy world",
            "semantic_object_pair": ("Astronaut", "Iron"),
        },
        "inversion-wolf": {
            **_INVERSION_COMMON,
            "num_inference_steps": 200,
            "guidance_steps": 120,
            "cool_down_steps": 60,
            "semantic_guidance_blocks": ("up_blocks.1", "up_blocks.2"),
            "semantic_block_weights": (200.0, 100.0),
            "inversion_prompt": "Wolf, turns its head, in the wild",
            "semantic_object_pair": ("Wolf", "Duck"),
        },
    }
)

# In the official yaml but never used there (bug B1); appended with ", " only when `append_positive_prompt`.
OFFICIAL_POSITIVE_PROMPT = "8k, high detailed, best quality, film grain, Fujifilm XT3"

CFG_FORMS = ("official", "standard")
# What the SparseCtrl network sees in the extraction pass: the reference's own frames (official) or nothing.
SPARSECTRL_EXTRACTION = ("reference", "sketch", "none")
SCRIBBLE_INVERT = ("auto", "never", "always")
SCHEDULES = ("uneven", "leading")
CONTEXT_NOISES = ("independent", "freenoise")
NOISE_CORRELATION_FORMS = ("shared", "progressive", "reference-flow")
SUBJECT_PLACEMENTS = ("free", "reference-path")
# With context windows a clip may be longer than the motion adapter's sequence: up to this many frames.
MAX_WINDOWED_FRAMES = 256
VAE_POSTERIORS = ("sample", "mode")
MOTION_SOURCES = ("single-step", "inversion")
# Tuple-valued fields: lists on the wire, tuples in the dataclass.
_TUPLE_FIELDS = (
    "motion_guidance_blocks",
    "inversion_guidance_blocks",
    "inversion_block_weights",
    "semantic_guidance_blocks",
    "semantic_block_weights",
    "semantic_object_pair",
)

MAX_SEED = 2**63 - 1
MAX_SIDE = 2048
MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class MotionCloneParams:
    """Everything that decides a MotionClone result. Defaults are the official `camera` config.

    Attributes:
        prompt: what the new video shows.
        negative_prompt: CFG negative prompt; defaults to the official one.
        num_frames: frames sampled uniformly from the reference (official 16); at most the adapter's maximum.
        height, width: output size in pixels, multiples of 8 (official 512).
        num_inference_steps: N, total DDIM steps (camera 100, object 300).
        guidance_steps: G, steps with motion guidance, the first G of the schedule (camera 50, object 180). 0 runs
            without guidance and without extracting a motion representation (the uneven schedule then spreads its N
            steps over the whole range); for a baseline that differs from a guided run by the guidance alone, keep G
            and set the guidance weight to 0.
        guidance_fraction: the official `guidance_scale`; guided timesteps lie in [(1−f)·1000, 999] (camera 0.3).
        motion_guidance_weight: w in L = w·λ·Σ_m MSE (official 2000).
        warm_up_steps, cool_down_steps: lengths of the linear ramps on the loss (official 10 and 10).
        motion_guidance_blocks: UNet blocks whose temporal attention is guided (official `up_blocks.1`).
        add_noise_step: t*, the timestep the reference is noised to for extraction (official 400).
        top_k: attention entries kept per query row (official 1).
        schedule: "uneven" (official: G steps in the guided range, then N−G below it) or "leading" (diffusers'
            DDIMScheduler default spacing, N evenly spaced steps; the first G of them are guided).
        cfg_scale: classifier-free guidance scale (official 7.5).
        cfg_form: "official" ε = ε_c + s(ε_c − ε_u) (7.5 here is 8.5 in the standard form) or "standard".
        seed: seeds the initial noise (official default 2025).
        motion_seed: seeds the extraction noise and VAE sampling. None couples them with `seed`, as in the official
            code: the extraction noise and the initial latent are then the same tensor. Set it to reuse one
            extracted representation across many seeds.
        vae_posterior: "sample" (official) or "mode" of the VAE posterior for the reference latents.
        resize_mode: "squash" (official), "crop" or "pad" to bring the reference to height × width.
        controlnet_scale: SparseCtrl's conditioning scale (official 1.0); used only with a condition.
        sparsectrl_extraction: "reference" (official) gives the SparseCtrl network the reference's own frames on the
            condition frames during extraction (for scribble: its RGB frames, bug B4); "sketch" gives the scribble
            network a sketch of those frames instead (their strongest edges as light strokes: the fix of B4; for
            RGB the same as "reference"); "none" leaves SparseCtrl out there.
        scribble_invert: scribble conditions are light strokes on a dark page, as the scribble model learned them
            (the official condition images). "auto" inverts a mostly light image (a dark sketch on white, such as
            Blender's line art), which leaves the official images as they are; "never" and "always" decide for all.
        frame_sampling: how the reference's frames are picked: "linspace" (current official code:
            linspace(0, total − 1, F) floored, spread over the whole clip) or "interval" (the inversion method's
            old rule: every (total // F)-th frame from the first, so the tail of the clip may be left out) or "step"
            (every `frame_step`-th frame from the first: a long shot at a chosen frame rate).
        frame_step: the frame step of `frame_sampling="step"` (2 takes every 2nd frame: 24 fps becomes 12 fps).
        context_length, context_overlap: a clip of more than `context_length` frames is denoised in windows of that
            many frames overlapping by `context_overlap` (default 16 and 4), blended with weights that fall off
            towards the window edges; its motion representation is extracted with the same windows and each window's
            loss guides that window. Up to 256 frames; memory stays that of one window. Official: 16 frames, one
            window.
        context_schedule: "uniform" sliding windows (the last one ends on the last frame) or "looped" (the last
            windows wrap around to the first frames, for clips that loop).
        context_noise: "independent" noise for every frame, or "freenoise" (the first window's noise repeated,
            shuffled, for the later frames, so that all windows start from alike noise).
        noise_frame_correlation: ρ, the share of the noise's variance that all frames have in common: each frame's
            noise is √ρ·ε_shared + √(1−ρ)·ε_frame, still N(0, I) per frame, with correlation ρ between frames (the
            mixed noise of PYoCo, Ge et al. 2023). A motion prior too weak to keep frames alike gets steadier clips
            from it. It applies to the extraction noise too where that is coupled with the initial latent. Official:
            0, independent frames.
        noise_correlation_form: "shared" (above: any two frames correlate by ρ) or "progressive" (each frame's noise
            is ρ·the previous frame's + √(1−ρ²)·its own, so frames k apart correlate by ρ^k: PYoCo's progressive
            noise, which lets the picture drift over the clip), or "reference-flow" ("shared", with the shared noise
            carried along the reference's optical flow, so that a model that draws what its noise shows moves its
            picture with the reference: a camera pan pans it; `noise_warp.py`).
        subject_placement: "free" (official: the subject forms wherever the noise puts it) or "reference-path": the
            patch of the shared noise from which the prompt's subject forms (found by a short unguided preview) is
            moved, frame by frame, to where the reference's moving subject is (`subject_placement.py`); in a camera
            move, which has no one moving subject, all of the shared noise travels as with "reference-flow" instead.
            Needs `noise_frame_correlation` above 0 with the "shared" form.
        subject_word: the prompt's word for the subject whose noise is moved; None picks the word whose text
            cross-attention is most concentrated in the preview.
        subject_preview_steps: denoising steps of the unguided preview that finds where the subject forms.
        attention_precision: "parity" computes the F×F attention in the model dtype like the official code;
            "accurate" in float32 (recommended with bf16).
        motion_norm: "per-frame" GroupNorm in the motion modules, as AnimateDiff was trained (official); or
            diffusers' "cross-frame".
        append_positive_prompt: append the official quality suffix with ", " (the official code never does: B1).
        positive_prompt: that suffix.
        decode_chunk_size: frames per VAE decode call (memory only; results are identical).
        fps: frame rate written into the result.
        motion_source: "single-step" (current method: one noisy forward of the reference at t*) or "inversion"
            (paper v1-v3: DDIM inversion and time-dependent guidance). The fields below apply to
            "inversion" only; there the schedule is linspace(0, 999, N) and `guidance_fraction`, `schedule`,
            `add_noise_step`, `motion_guidance_weight` and `motion_guidance_blocks` are not used.
        inversion_prompt: describes the reference video; used for the inversion and the reference stream.
        inversion_steps: DDIM inversion steps (official 1000: every timestep; fewer reuse the nearest inverted t).
        inversion_guidance_blocks: blocks whose temporal attention is guided (official up_blocks.1, up_blocks.2).
        inversion_block_weights: w per guided block (official 20000, 10000); L_mot = mean_m w_m/100 · L^mot_m.
        semantic_guidance_blocks: blocks whose temporal keys carry the semantic loss (official both, street up1).
        semantic_block_weights: a per semantic block (official 500, 0); all zero switches semantic guidance and
            the appearance stream off.
        semantic_object_pair: (word of `inversion_prompt`, word of `prompt`) for location-aware guidance; None
            uses the global variant.
        semantic_example_threshold: τ_ex for the reference mask (official 0.3; 0.2 for "walk").
        semantic_app_threshold: τ_app for the appearance mask (official 0.3).
        semantic_sigma: σ of the Gaussian around the reference centroid, in cells of a 16-cell side (official 5).
        inversion_parity_prev_timestep: use the old t_prev = t − 1000//N (bug B12) instead of the next timestep.
        inversion_grad_threshold: optional element-wise clamp of ∇L (official `grad_guidance_threshold`, null).
    """

    prompt: str
    negative_prompt: str = OFFICIAL_NEGATIVE_PROMPT
    num_frames: int = 16
    height: int = 512
    width: int = 512
    num_inference_steps: int = 100
    guidance_steps: int = 50
    guidance_fraction: float = 0.3
    motion_guidance_weight: float = 2000.0
    warm_up_steps: int = 10
    cool_down_steps: int = 10
    motion_guidance_blocks: tuple[str, ...] = ("up_blocks.1",)
    add_noise_step: int = 400
    top_k: int = 1
    schedule: str = "uneven"
    cfg_scale: float = 7.5
    cfg_form: str = "official"
    seed: int = 2025
    motion_seed: int | None = None
    vae_posterior: str = "sample"
    resize_mode: str = "squash"
    frame_sampling: str = "linspace"
    frame_step: int = 1
    context_length: int = 16
    context_overlap: int = 4
    context_schedule: str = "uniform"
    context_noise: str = "independent"
    noise_frame_correlation: float = 0.0
    noise_correlation_form: str = "shared"
    subject_placement: str = "free"
    subject_word: str | None = None
    subject_preview_steps: int = 8
    controlnet_scale: float = 1.0
    sparsectrl_extraction: str = "reference"
    scribble_invert: str = "auto"
    attention_precision: str = "parity"
    motion_norm: str = "per-frame"
    append_positive_prompt: bool = False
    positive_prompt: str = OFFICIAL_POSITIVE_PROMPT
    decode_chunk_size: int = 4
    fps: float = 8.0
    motion_source: str = "single-step"
    inversion_prompt: str = ""
    inversion_steps: int = 1000
    inversion_guidance_blocks: tuple[str, ...] = ("up_blocks.1", "up_blocks.2")
    inversion_block_weights: tuple[float, ...] = (20000.0, 10000.0)
    semantic_guidance_blocks: tuple[str, ...] = ("up_blocks.1", "up_blocks.2")
    semantic_block_weights: tuple[float, ...] = (500.0, 0.0)
    semantic_object_pair: tuple[str, str] | None = None
    semantic_example_threshold: float = 0.3
    semantic_app_threshold: float = 0.3
    semantic_sigma: float = 5.0
    inversion_parity_prev_timestep: bool = False
    inversion_grad_threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_config(cls, config: str, /, **overrides: Any) -> "MotionCloneParams":
        """Parameters of an official config ("camera" or "object"), with `overrides` on top."""
        if config not in CONFIG_PRESETS:
            raise ParameterError("config", f"must be one of {sorted(CONFIG_PRESETS)}, got {config!r}")
        return cls.from_dict({**CONFIG_PRESETS[config], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MotionCloneParams":
        """Build from plain values (JSON, msgpack); unknown keys raise `ParameterError` naming them."""
        known = {f.name for f in fields(cls)} - {"extra"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParameterError(unknown[0], f"is not a MotionClone parameter; known parameters: {sorted(known)}")
        if "prompt" not in values:
            raise ParameterError("prompt", "is required")
        values = dict(values)
        for name in _TUPLE_FIELDS:
            value = values.get(name)
            if value is None:
                continue  # left out, or None where that is allowed (validation says where it is not)
            if not isinstance(value, list | tuple):
                raise ParameterError(name, f"must be a list, got {type(value).__name__} {value!r}")
            values[name] = tuple(value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for metadata and the wire."""
        values = asdict(self)
        values.pop("extra")
        for name in _TUPLE_FIELDS:
            if isinstance(values[name], tuple):
                values[name] = list(values[name])
        return values

    def replace(self, **changes: Any) -> "MotionCloneParams":
        return replace(self, **changes)

    @property
    def effective_motion_seed(self) -> int:
        return self.seed if self.motion_seed is None else self.motion_seed

    @property
    def full_prompt(self) -> str:
        """The positive prompt the text encoder sees."""
        if self.append_positive_prompt and self.positive_prompt:
            return f"{self.prompt}, {self.positive_prompt}"
        return self.prompt


def is_guided(params: MotionCloneParams) -> bool:
    """Whether any step gets a guidance gradient; False for an unguided baseline (G = 0 or every weight 0)."""
    if params.guidance_steps == 0:
        return False
    if params.motion_source == "inversion":
        return any(w != 0 for w in (*params.inversion_block_weights, *params.semantic_block_weights))
    return params.motion_guidance_weight != 0


def validate_params(params: MotionCloneParams, max_frames: int | None = None) -> None:
    """Raise `ParameterError` naming the first invalid parameter, its value and the allowed range.

    Args:
        params: the parameters to check.
        max_frames: the motion adapter's maximum sequence length, when known.
    """
    _check_text(params.prompt, "prompt", allow_empty=False)
    _check_text(params.negative_prompt, "negative_prompt", allow_empty=True)
    _check_text(params.positive_prompt, "positive_prompt", allow_empty=True)
    _check_windows(params, max_frames)
    for name in ("height", "width"):
        value = getattr(params, name)
        _check_int(value, name, 8, MAX_SIDE)
        if value % 8:
            raise ParameterError(name, f"must be a multiple of 8, got {value}")
    _check_int(params.num_inference_steps, "num_inference_steps", 1, 1000)
    _check_int(params.guidance_steps, "guidance_steps", 0, params.num_inference_steps)
    _check_float(params.guidance_fraction, "guidance_fraction", 0.0, 1.0, open_low=True, open_high=True)
    _check_float(params.motion_guidance_weight, "motion_guidance_weight", 0.0, 1e7)
    _check_int(params.warm_up_steps, "warm_up_steps", 0, 1000)
    _check_int(params.cool_down_steps, "cool_down_steps", 0, 1000)
    if not params.motion_guidance_blocks or not all(isinstance(b, str) for b in params.motion_guidance_blocks):
        raise ParameterError(
            "motion_guidance_blocks", f"must be a non-empty list of block names, got {params.motion_guidance_blocks!r}"
        )
    _check_int(params.add_noise_step, "add_noise_step", 0, 999)
    _check_int(params.top_k, "top_k", 1, min(params.num_frames, params.context_length))
    _check_float(params.cfg_scale, "cfg_scale", 0.0, 50.0)
    _check_int(params.seed, "seed", 0, MAX_SEED)
    _check_float(params.noise_frame_correlation, "noise_frame_correlation", 0.0, 1.0, open_high=True)
    _check_choice(params.noise_correlation_form, "noise_correlation_form", NOISE_CORRELATION_FORMS)
    _check_subject_placement(params)
    if params.motion_seed is not None:
        _check_int(params.motion_seed, "motion_seed", 0, MAX_SEED)
    _check_choice(params.cfg_form, "cfg_form", CFG_FORMS)
    _check_choice(params.schedule, "schedule", SCHEDULES)
    _check_choice(params.vae_posterior, "vae_posterior", VAE_POSTERIORS)
    _check_choice(params.resize_mode, "resize_mode", RESIZE_MODES)
    _check_choice(params.frame_sampling, "frame_sampling", FRAME_SAMPLING_RULES)
    _check_int(params.frame_step, "frame_step", 1, MAX_FRAME_STEP)
    _check_float(params.controlnet_scale, "controlnet_scale", 0.0, 10.0)
    _check_choice(params.sparsectrl_extraction, "sparsectrl_extraction", SPARSECTRL_EXTRACTION)
    _check_choice(params.scribble_invert, "scribble_invert", SCRIBBLE_INVERT)
    _check_choice(params.attention_precision, "attention_precision", ATTENTION_PRECISIONS)
    _check_choice(params.motion_norm, "motion_norm", MOTION_NORMS)
    if not isinstance(params.append_positive_prompt, bool):
        raise ParameterError("append_positive_prompt", f"must be true or false, got {params.append_positive_prompt!r}")
    _check_int(params.decode_chunk_size, "decode_chunk_size", 1, 1024)
    _check_float(params.fps, "fps", 0.0, 240.0, open_low=True)
    _check_choice(params.motion_source, "motion_source", MOTION_SOURCES)
    _validate_inversion(params)  # unused by the single-step method, but recorded in its metadata: valid values only


def _check_subject_placement(params: MotionCloneParams) -> None:
    _check_choice(params.subject_placement, "subject_placement", SUBJECT_PLACEMENTS)
    if params.subject_word is not None:
        _check_text(params.subject_word, "subject_word", allow_empty=False)
    # One preview step would run at timestep 0 on pure noise (a one-step schedule sits at its low end).
    _check_int(params.subject_preview_steps, "subject_preview_steps", 2, 100)
    if params.subject_placement == "free":
        return
    if params.noise_frame_correlation <= 0 or params.noise_correlation_form != "shared":
        raise ParameterError(
            "subject_placement",
            "reference-path moves a patch of the noise that all frames share: it needs noise_frame_correlation above 0"
            f" with noise_correlation_form 'shared' (got {params.noise_frame_correlation}, "
            f"{params.noise_correlation_form!r})",
        )
    if params.motion_source == "inversion":
        raise ParameterError("subject_placement", "reference-path works with the single-step method only")


def _check_windows(params: MotionCloneParams, max_frames: int | None) -> None:
    """num_frames and the context windows: one pass for a clip up to `context_length` frames, windows beyond."""
    longest = max_frames or 255
    _check_int(params.context_length, "context_length", 2, longest)
    _check_int(params.context_overlap, "context_overlap", 0, params.context_length - 1)
    _check_choice(params.context_schedule, "context_schedule", CONTEXT_SCHEDULES)
    _check_choice(params.context_noise, "context_noise", CONTEXT_NOISES)
    if isinstance(params.num_frames, int) and params.num_frames > params.context_length:
        _check_int(params.num_frames, "num_frames", 2, MAX_WINDOWED_FRAMES)
        if params.motion_source == "inversion":
            raise ParameterError(
                "num_frames",
                f"is {params.num_frames}, more than context_length {params.context_length}: context windows work "
                "with the single-step method only; lower num_frames or use motion_source single-step",
            )
        return
    # Up to context_length (itself at most `longest`) frames run in one pass; more run in windows.
    _check_int(params.num_frames, "num_frames", 2, MAX_WINDOWED_FRAMES)


def _validate_inversion(params: MotionCloneParams) -> None:
    """The fields of the inversion-based method (paper v1-v3: DDIM inversion and time-dependent guidance)."""
    _check_text(params.inversion_prompt, "inversion_prompt", allow_empty=True)
    _check_int(params.inversion_steps, "inversion_steps", 1, 1000)
    for blocks_name, weights_name in (
        ("inversion_guidance_blocks", "inversion_block_weights"),
        ("semantic_guidance_blocks", "semantic_block_weights"),
    ):
        blocks, weights = getattr(params, blocks_name), getattr(params, weights_name)
        if not isinstance(blocks, tuple) or not blocks or not all(isinstance(b, str) for b in blocks):
            raise ParameterError(blocks_name, f"must be a non-empty list of block names, got {blocks!r}")
        if not isinstance(weights, tuple) or len(weights) != len(blocks):
            raise ParameterError(weights_name, f"must give one weight per block of `{blocks_name}`, got {weights!r}")
        for weight in weights:
            _check_float(weight, weights_name, 0.0, 1e7)
    pair = params.semantic_object_pair
    if pair is not None and (
        not isinstance(pair, tuple) or len(pair) != 2 or not all(isinstance(w, str) and w.strip() for w in pair)
    ):
        raise ParameterError(
            "semantic_object_pair", f"must be [word of inversion_prompt, word of prompt] or null, got {pair!r}"
        )
    _check_float(params.semantic_example_threshold, "semantic_example_threshold", 0.0, 1.0)
    _check_float(params.semantic_app_threshold, "semantic_app_threshold", 0.0, 1.0)
    _check_float(params.semantic_sigma, "semantic_sigma", 0.0, 1000.0, open_low=True)
    if not isinstance(params.inversion_parity_prev_timestep, bool):
        raise ParameterError(
            "inversion_parity_prev_timestep", f"must be true or false, got {params.inversion_parity_prev_timestep!r}"
        )
    if params.inversion_grad_threshold is not None:
        _check_float(params.inversion_grad_threshold, "inversion_grad_threshold", 0.0, 1e9, open_low=True)


def _check_text(value: Any, name: str, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise ParameterError(name, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ParameterError(name, "must not be empty")
    if len(value) > MAX_PROMPT_CHARS:
        raise ParameterError(name, f"must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}")


def _check_int(value: Any, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(name, f"must be an integer between {low} and {high}, got {value!r}")
    if not low <= value <= high:
        raise ParameterError(name, f"must be between {low} and {high}, got {value}")


def _check_float(
    value: Any, name: str, low: float, high: float, open_low: bool = False, open_high: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ParameterError(name, f"must be a number between {low} and {high}, got {value!r}")
    too_low = value <= low if open_low else value < low
    too_high = value >= high if open_high else value > high
    if too_low or too_high:
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        raise ParameterError(name, f"must be in {left}{low}, {high}{right}, got {value}")


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ParameterError(name, f"must be one of {', '.join(choices)}; got {value!r}")
