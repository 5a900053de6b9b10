"""MotionClone on diffusers' AnimateDiff: motion-guided sampling from a reference video. No bpy.

Paper: MotionClone: Training-Free Motion Cloning for Controllable Video Generation (arXiv 2406.05338), the
inversion-free method (v4+). The numbered steps of `__call__` follow the paper; each calls one helper module:
`representation` (the motion representation), `schedule` (the uneven schedule, the ramps and the guided update),
`attention_capture` (the temporal attention), `partial_unet` (stopping after the guided blocks), `groupnorm`
(per-frame normalisation).

Notation:
    x_t                    latent video at timestep t, (1, 4, F, h, w)
    ε_u, ε_c               noise predictions with the negative and the positive prompt
    A_m                    temporal attention probabilities of guided module m, (B·h·w, heads, F, F)
    L = w·λ(i)·Σ_m L_m     motion loss at guided step i (eq. 3 of the paper, with the ramp λ)
    ∇L                     ∂L/∂x_t through the conditional branch only
"""

import math
import platform
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, MotionAdapter, UNetMotionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ..errors import JobCancelled, ParameterError
from ..models.bundle import ModelBundle
from ..video_io import prepare_reference
from .attention_capture import capture_temporal_attention, guided_module_names
from .context_windows import ContextWindows, freenoise
from .groupnorm import set_motion_module_norm
from .guidance_inversion import InversionGuidanceConfig, denoise_inversion, linspace_timesteps
from .inversion import InversionCache, InvertedLatents, ddim_invert, inversion_key
from .noise_warp import reference_source_maps, warp_shared_noise
from .parameters import MotionCloneParams, is_guided, validate_params
from .partial_unet import last_block, no_grad_after
from .prompt_length import long_prompt_warning
from .representation import (
    MotionRepresentation,
    RepresentationCache,
    encode_reference,
    extract_motion_representation,
    motion_loss,
    representation_key,
    tensor_digest,
)
from .schedule import guidance_ramp, guided_ddim_step, uneven_timesteps
from .semantic_guidance import (
    MASK_BLOCK,
    block_grid,
    capture_cross_attention,
    cross_attention_module_names,
    word_token_index,
)
from .sparsectrl import (
    SparseCondition,
    SparseCtrl,
    check_condition,
    condition_tensors,
    place_on_frames,
    reference_sketch,
    scribble_strokes,
    unet_residuals,
    window_condition,
)
from .subject_placement import (
    SubjectPlacement,
    candidate_words,
    locate_subject,
    measure_set_motion,
    most_concentrated_token,
    reference_subject_path,
)

ProgressCallback = Callable[[str, int, int], None]
CancelCheck = Callable[[], bool]
LatentsCallback = Callable[[int, torch.Tensor], None]


@dataclass
class _Call:
    """What one generation carries from step to step: its inputs, callbacks and the seconds each stage took."""

    params: MotionCloneParams
    reference_frames: np.ndarray
    timesteps: torch.Tensor
    negative_embeds: torch.Tensor
    positive_embeds: torch.Tensor
    report: ProgressCallback
    should_stop: CancelCheck
    latents_callback: LatentsCallback | None
    timings: dict[str, float] = field(default_factory=dict)
    condition: SparseCondition | None = None


# Stages reported to the progress callback, in order.
STAGES = ("prepare", "extract", "denoise", "decode")
# The VAE posterior sample gets its own generator so that it never shifts the extraction noise ε.
VAE_SEED_OFFSET = 1


@dataclass
class MotionCloneOutput:
    """A finished video.

    Attributes:
        frames: (F, H, W, 3) uint8 RGB.
        metadata: plain values: every parameter, the seed, the model, per-stage timings, peak memory, versions.
    """

    frames: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


class MotionClonePipeline(DiffusionPipeline):
    """Clone the motion of a reference video onto a new text-prompted video (inversion-free MotionClone).

    Args:
        vae (`AutoencoderKL`): SD-1.5 autoencoder.
        text_encoder (`CLIPTextModel`): CLIP text encoder.
        tokenizer (`CLIPTokenizer`): CLIP tokenizer.
        unet (`UNetMotionModel`): SD-1.5 UNet with the AnimateDiff motion modules.
        motion_adapter (`MotionAdapter`): the adapter the UNet was built from (gives the maximum frame count).
        scheduler (`DDIMScheduler`): supplies ᾱ_t; the uneven schedule and the guided step are computed here.

    Example:
        >>> from motionclone.backend.models import load_preset
        >>> from motionclone.backend.engine import MotionClonePipeline, MotionCloneParams
        >>> pipe = MotionClonePipeline.from_bundle(load_preset("tiny"))
        >>> params = MotionCloneParams(prompt="a red fox", num_frames=8, height=128, width=128,
        ...                            num_inference_steps=6, guidance_steps=3)
        >>> video = pipe("reference.mp4", params).frames  # (8, 128, 128, 3) uint8
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNetMotionModel,
        motion_adapter: MotionAdapter,
        scheduler: DDIMScheduler,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            motion_adapter=motion_adapter,
            scheduler=scheduler,
        )
        self.model_description: dict[str, Any] = {}
        # A SparseCtrl model for image- and sketch-to-video, when the bundle has one (not a registered module: the
        # text-to-video pipeline works without it).
        self.controlnet: Any = None
        self.controlnet_kind: str | None = None
        # Inversion caches by folder (None: memory only); see `obtain_inversion`.
        self._inversion_caches: dict[str | None, InversionCache] = {}
        # A server checks a job's words (`check_inputs`) on its socket thread while the worker encodes another job's
        # prompt; the fast tokenizers change shared padding and truncation settings on every call, so one thread's
        # call could see the other's settings (a valid word reported missing, say).
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> "MotionClonePipeline":
        pipe = cls(
            bundle.vae, bundle.text_encoder, bundle.tokenizer, bundle.unet, bundle.motion_adapter, bundle.scheduler
        )
        pipe.model_description = dict(bundle.description)
        pipe.controlnet, pipe.controlnet_kind = bundle.controlnet, bundle.controlnet_kind
        return pipe

    @property
    def max_frames(self) -> int:
        return int(self.motion_adapter.config.motion_max_seq_length)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_size(self, params: MotionCloneParams) -> tuple[int, int]:
        """(height, width) of the latents for `params`' pixel size."""
        return params.height // self.vae_scale_factor, params.width // self.vae_scale_factor

    # ----------------------------------------------------------------------------------------------------------
    def __call__(
        self,
        reference: Any,
        params: MotionCloneParams,
        representation_cache: RepresentationCache | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        latents_callback: LatentsCallback | None = None,
        condition: SparseCondition | None = None,
        reference_fps: float | None = None,
    ) -> MotionCloneOutput:
        """Generate a video whose motion follows `reference` and whose content follows `params.prompt`.

        Args:
            reference: a video file, an image folder, or a (frames, H, W, 3) array; it is sampled to
                `params.num_frames` frames and resized to `params.height` × `params.width`.
            params (`MotionCloneParams`): every setting; see its docstring for meanings and official values.
            representation_cache (`RepresentationCache`, *optional*): reuse motion representations across calls.
            progress (*optional*): called as `progress(stage, step, total)`; stages are `STAGES`.
            cancel (*optional*): called before every step; returning True raises `JobCancelled`.
            latents_callback (*optional*): called as `latents_callback(step, x_t)` after every denoising step
                (for previews); must not modify the tensor.
            condition (`SparseCondition`, *optional*): SparseCtrl keyframes (rgb) or sketches (scribble) for
                image- and sketch-to-video; needs a bundle with a SparseCtrl model of that kind.
            reference_fps (`float`, *optional*): the frame rate of an array `reference` (a file knows its own),
                recorded in the metadata with the frames used.

        Returns:
            `MotionCloneOutput` with uint8 frames and metadata.
        """
        timings: dict[str, float] = {}
        report = progress or (lambda stage, step, total: None)
        should_stop = cancel or (lambda: False)
        self._reset_peak_memory()

        # 1. Check inputs
        started = time.perf_counter()
        module_names, timesteps = self.check_inputs(params)
        if condition is not None:
            self.check_condition_inputs(params, condition)
        set_motion_module_norm(self.unet, params.motion_norm)
        if self.controlnet is not None:  # SparseCtrl's down blocks have motion modules of their own
            set_motion_module_norm(self.controlnet, params.motion_norm)
        report("prepare", 0, 1)

        # 2. Read the reference: sample `num_frames` frames over the whole clip and resize
        clip = prepare_reference(
            reference,
            params.num_frames,
            params.height,
            params.width,
            params.resize_mode,
            params.frame_sampling,
            params.frame_step,
        )
        reference_frames = clip.frames

        # 3. Encode the prompts: the empty prompt for extraction, negative and positive for CFG
        empty_embeds = self.encode_prompt("")
        negative_embeds = self.encode_prompt(params.negative_prompt)
        positive_embeds = self.encode_prompt(params.full_prompt)

        # 4. Prepare the noise. Coupled (official): the extraction noise ε is the initial latent x_T
        placement, source_maps, set_motion, noise_params = None, None, None, params
        if params.subject_placement == "reference-path":
            set_motion = measure_set_motion(reference_frames, should_stop)
            if set_motion.is_camera_move:  # no one subject moves: all of the shared noise travels instead
                noise_params = replace(params, noise_correlation_form="reference-flow")
            else:
                embeds = (negative_embeds, positive_embeds)
                placement = self.plan_subject_placement(params, reference_frames, *embeds, should_stop)
        if noise_params.noise_frame_correlation > 0 and noise_params.noise_correlation_form == "reference-flow":
            # once for both noises
            source_maps = reference_source_maps(reference_frames, *self.latent_size(params), should_stop)
        latents = self.prepare_noise(params.seed, noise_params, source_maps, placement)
        coupled = params.motion_seed is None
        noise = latents if coupled else self.prepare_noise(params.motion_seed, noise_params, source_maps)
        timings["prepare"] = time.perf_counter() - started
        report("prepare", 1, 1)

        # 5-6. Motion representation and guided denoising: single-step extraction or DDIM inversion
        call = _Call(
            params,
            reference_frames,
            timesteps,
            negative_embeds,
            positive_embeds,
            report,
            should_stop,
            latents_callback,
            timings,
            condition,
        )
        if params.motion_source == "inversion":
            latents, losses, provenance = self._invert_and_denoise(call, latents, representation_cache)
        else:
            latents, losses, provenance = self._extract_and_denoise(
                call, latents, noise, empty_embeds, module_names, representation_cache
            )

        # 7. Decode the latents in chunks
        started = time.perf_counter()
        frames = self.decode_latents_to_frames(latents, params.decode_chunk_size, report, should_stop)
        timings["decode"] = time.perf_counter() - started

        metadata = {**self.describe_result(params, timesteps, timings, losses), **provenance}
        metadata["condition"] = None if condition is None else condition.describe(params.controlnet_scale)
        if params.subject_placement == "free":
            metadata["subject_placement"] = None
        elif set_motion is not None and set_motion.is_camera_move:
            metadata["subject_placement"] = {
                "camera_move": CAMERA_MOVE,
                **{name: round(value, 3) for name, value in asdict(set_motion).items()},
            }
        elif placement is None:
            metadata["subject_placement"] = {"skipped": NO_SUBJECT_PATH}
        else:
            metadata["subject_placement"] = placement.describe()
        source_fps = clip.fps if reference_fps is None else float(reference_fps)
        metadata["reference_frames"] = {"indices": [int(i) for i in clip.indices], "source_fps": source_fps}
        metadata["context_windows"] = ContextWindows.from_params(params, self.unet.device, self.unet.dtype).frames
        metadata["warnings"] = self.long_prompt_warnings(params)
        return MotionCloneOutput(frames=frames, metadata=metadata)

    def check_inputs(self, params: MotionCloneParams) -> tuple[list[str], torch.Tensor]:
        """Validate `params` against this model; returns the guided module names and the timesteps.

        Raises `ParameterError` naming the first invalid parameter. Cheap: servers call it before queueing a job.
        """
        validate_params(params, max_frames=self.max_frames)
        if params.subject_placement != "free" and params.subject_word is not None:
            self._word_token_index(params.full_prompt, params.subject_word, "subject_word")
        if params.motion_source == "inversion":
            self.inversion_guidance_config(params)  # checks blocks and the object words
            return guided_module_names(self.unet, params.inversion_guidance_blocks), self.prepare_timesteps(params)
        self._check_weight_fits_dtype(params)
        module_names = guided_module_names(self.unet, params.motion_guidance_blocks)
        return module_names, self.prepare_timesteps(params)

    def _check_weight_fits_dtype(self, params: MotionCloneParams) -> None:
        """With float16 weights and "parity" precision the motion loss stays float16, and its gradient starts from
        the weight itself: past float16's largest number it is inf, and the latents turn NaN (a black video on a GPU
        for a job that runs on the CPU)."""
        largest = torch.finfo(torch.float16).max
        half = self.unet.dtype == torch.float16 and params.attention_precision == "parity"
        if half and params.motion_guidance_weight > largest:
            raise ParameterError(
                "motion_guidance_weight",
                f"must be at most {largest:.0f} with float16 weights and attention_precision 'parity', got "
                f"{params.motion_guidance_weight:g}: use attention_precision 'accurate' (float32) for a larger one",
            )

    def check_condition_inputs(
        self, params: MotionCloneParams, condition: SparseCondition, check_size: bool = True
    ) -> None:
        """Raise `ParameterError` naming the field when `condition` cannot be used with `params` on this model
        (`check_size=False`: whatever size its images have, as before they are resized)."""
        if params.motion_source == "inversion":
            raise ParameterError("condition", "SparseCtrl conditions work with the single-step method only")
        check_condition(
            condition, params.num_frames, params.height, params.width, self.controlnet_kind, check_size=check_size
        )

    # ----------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """CLIP embedding (1, 77, C) of `prompt`, padded to the tokenizer's maximum length."""
        with self._tokenizer_lock:
            tokens = self.tokenizer(
                [prompt],
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
        return self.text_encoder(tokens.input_ids.to(self.text_encoder.device))[0].to(self.unet.dtype)

    def long_prompt_warnings(self, params: MotionCloneParams) -> list[str]:
        """A message for each prompt of `params` that the text encoder reads only in part."""
        prompt_field = "prompt" if params.full_prompt == params.prompt else "prompt (with positive_prompt appended)"
        prompts = {prompt_field: params.full_prompt, "negative_prompt": params.negative_prompt}
        if params.motion_source == "inversion":
            prompts["inversion_prompt"] = params.inversion_prompt
        with self._tokenizer_lock:
            warnings = [long_prompt_warning(field, self.tokenizer, text) for field, text in prompts.items()]
        return [warning for warning in warnings if warning is not None]

    def _word_token_index(self, prompt: str, word: str, field_name: str) -> int:
        """`word_token_index` with this pipeline's tokenizer, one thread at a time."""
        with self._tokenizer_lock:
            return word_token_index(self.tokenizer, prompt, word, field_name)

    def prepare_timesteps(self, params: MotionCloneParams) -> torch.Tensor:
        """The official uneven schedule, or diffusers' evenly spaced "leading" DDIM schedule.

        The inversion-based method always uses its old schedule, round(linspace(0, 999, N)) descending.
        """
        if params.motion_source == "inversion":
            return linspace_timesteps(params.num_inference_steps)
        if params.schedule == "uneven":
            return uneven_timesteps(params.num_inference_steps, params.guidance_steps, params.guidance_fraction)
        # A scheduler of its own: the server checks a new job's parameters on its socket thread while a job runs.
        scheduler = type(self.scheduler).from_config(self.scheduler.config)
        scheduler.set_timesteps(params.num_inference_steps)
        timesteps = scheduler.timesteps.clone()
        train_steps = scheduler.config.num_train_timesteps
        if int(timesteps.max()) >= train_steps:  # diffusers' steps_offset pushes the first step past the last ᾱ
            offset = int(timesteps.min())
            most = max(n for n in range(1, train_steps + 1) if (n - 1) * (train_steps // n) + offset < train_steps)
            raise ParameterError(
                "num_inference_steps",
                f"must be at most {most} with schedule 'leading': {params.num_inference_steps} steps would start at "
                f"timestep {int(timesteps.max())}, past the model's {train_steps} training timesteps",
            )
        return timesteps

    def prepare_noise(
        self,
        seed: int,
        params: MotionCloneParams,
        source_maps: np.ndarray | None = None,
        placement: SubjectPlacement | None = None,
    ) -> torch.Tensor:
        """ε ~ N(0, I) of shape (1, 4, F, H/8, W/8) from a fresh generator seeded with `seed` (never the global RNG),
        correlated across frames by `noise_frame_correlation`; the "reference-flow" form needs the reference's
        `source_maps` (`reference_source_maps`), along which the shared noise travels. With `placement`, the shared
        noise's subject patch is moved along the reference subject's path."""
        shape = (1, self.unet.config.in_channels, params.num_frames, *self.latent_size(params))
        generator = torch.Generator(device=self.unet.device).manual_seed(seed)
        noise = torch.randn(shape, generator=generator, device=self.unet.device, dtype=self.unet.dtype)
        if params.context_noise == "freenoise":
            noise = freenoise(noise, params.context_length, params.context_overlap, generator)
        if params.noise_frame_correlation > 0:
            if params.noise_correlation_form == "reference-flow" and source_maps is None:
                raise ParameterError("noise_correlation_form", "reference-flow needs the reference's source maps")
            noise = correlate_frames(
                noise, params.noise_frame_correlation, params.noise_correlation_form, generator, source_maps, placement
            )
        return noise

    def plan_subject_placement(
        self,
        params: MotionCloneParams,
        reference_frames: np.ndarray,
        negative_embeds: torch.Tensor,
        positive_embeds: torch.Tensor,
        should_stop: CancelCheck,
    ) -> SubjectPlacement | None:
        """Where the prompt's subject forms (an unguided preview of `subject_preview_steps` from the same noise, the
        subject word's cross-attention at `up_blocks.1`) and where the reference's subject goes, frame by frame.
        None when nothing in the reference moves (a still clip). Not for a camera move (`measure_set_motion`), whose
        largest moving region jumps between parts of the set."""
        height, width = self.latent_size(params)
        path = reference_subject_path(reference_frames, height, width)
        if path is None:
            return None
        preview = replace(
            params, num_inference_steps=params.subject_preview_steps, guidance_steps=0, subject_placement="free"
        )
        with capture_cross_attention(self.unet, cross_attention_module_names(self.unet, MASK_BLOCK)) as store:
            store.recording = True
            self.denoise(
                self.prepare_noise(params.seed, preview),
                self.prepare_timesteps(preview),
                None,
                guided_module_names(self.unet, params.motion_guidance_blocks),
                negative_embeds,
                positive_embeds,
                preview,
                lambda stage, step, total: None,
                should_stop,
            )
            maps = torch.stack(list(store.probs.values())).float().mean(dim=0)  # (2·F, positions, tokens)
        maps = maps[maps.shape[0] // 2 :]  # the conditional half of the [E_neg, E_pos] batch
        if params.subject_word is not None:
            token = self._word_token_index(params.full_prompt, params.subject_word, "subject_word")
            word = params.subject_word
        else:
            words = {}  # first token of each word of the prompt → the word
            for candidate in candidate_words(params.prompt):
                try:
                    index = self._word_token_index(params.full_prompt, candidate, "prompt")
                except ParameterError:  # past the 77-token limit
                    continue
                words.setdefault(index, candidate)
            if not words:
                raise ParameterError("subject_word", "no word of the prompt is within the text encoder's 77 tokens")
            token = most_concentrated_token(maps, list(words))
            word = words[token]
        grid = block_grid(maps.shape[1], height, width)
        source, side = locate_subject(maps[..., token].reshape(-1, *grid), height, width)
        return SubjectPlacement(word, source, side, path)

    def obtain_representation(
        self,
        reference_frames: np.ndarray,
        noise: torch.Tensor,
        empty_embeds: torch.Tensor,
        params: MotionCloneParams,
        cache: RepresentationCache | None,
        condition: SparseCondition | None = None,
        window: list[int] | None = None,
    ) -> tuple[MotionRepresentation, str, bool]:
        """Return (representation, cache key, whether it came from the cache).

        For a context window, `reference_frames`, `noise` and `condition` are the window's and `window` its frames
        in the whole clip (part of the cache key).

        With a SparseCtrl `condition`, the extraction pass gets residuals too, from the reference's own frames on
        the condition's frames, unless `params.sparsectrl_extraction` is "none"."""
        with_sparsectrl = (
            condition is not None and params.sparsectrl_extraction != "none" and params.controlnet_scale != 0
        )
        extraction = {
            "add_noise_step": params.add_noise_step,
            "motion_guidance_blocks": list(params.motion_guidance_blocks),
            "top_k": params.top_k,
            "vae_posterior": params.vae_posterior,
            "motion_seed": params.effective_motion_seed,
            "attention_precision": params.attention_precision,
            "motion_norm": params.motion_norm,
            "dtype": str(self.unet.dtype),
            # The noise itself: its seed alone does not fix it (shared or warped noise, placement, FreeNoise windows).
            "noise": tensor_digest(noise),
        }
        if window is not None:
            extraction["window"] = list(window)
        if with_sparsectrl:
            extraction["sparsectrl"] = {
                "kind": condition.kind,
                "frames": list(condition.frames),
                "scale": params.controlnet_scale,
                "extraction": params.sparsectrl_extraction,
            }
        key = representation_key(reference_frames, self.model_description, extraction)
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            return cached.to(self.unet.device), key, True
        generator = torch.Generator(device=self.vae.device).manual_seed(params.effective_motion_seed + VAE_SEED_OFFSET)
        z0 = encode_reference(self.vae, reference_frames, params.vae_posterior, generator).to(self.unet.dtype)
        metadata = {key_: str(value) for key_, value in extraction.items()}
        metadata["model"] = str(self.model_description)
        unet_kwargs: dict[str, Any] = {}
        if with_sparsectrl:
            unet_kwargs = self._extraction_residuals(condition, reference_frames, z0, empty_embeds, params)
        representation = extract_motion_representation(
            self.unet,
            self.scheduler.alphas_cumprod,
            z0,
            noise,
            empty_embeds,
            params.add_noise_step,
            params.motion_guidance_blocks,
            params.top_k,
            params.attention_precision,
            metadata,
            unet_kwargs,
        )
        if cache is not None:
            cache.put(key, representation)
        return representation, key, False

    def _extraction_residuals(
        self,
        condition: SparseCondition,
        reference_frames: np.ndarray,
        z0: torch.Tensor,
        empty_embeds: torch.Tensor,
        params: MotionCloneParams,
    ) -> dict[str, Any]:
        """SparseCtrl residuals of the extraction pass: the condition's frames filled from the reference itself
        (RGB: its latents; scribble: its RGB frames, as the official code does, bug B4, or with
        `sparsectrl_extraction="sketch"` a sketch of them), empty prompt, batch 1."""
        frames = condition.frames
        if condition.kind == "rgb":
            cond, mask = place_on_frames(z0[0, :, list(frames)].permute(1, 0, 2, 3), frames, params.num_frames)
        else:
            shown = reference_frames[list(frames)]
            if params.sparsectrl_extraction == "sketch":
                shown = reference_sketch(shown)
            cond, mask = condition_tensors("scribble", shown, frames, params.num_frames, self.vae, z0.dtype)
        sparsectrl = SparseCtrl(self.controlnet, cond, mask, params.controlnet_scale)
        embeds = empty_embeds.repeat_interleave(params.num_frames, dim=0)
        return unet_residuals(sparsectrl.residuals(z0, params.add_noise_step, embeds))

    def prepare_sparsectrl(self, condition: SparseCondition | None, params: MotionCloneParams) -> SparseCtrl | None:
        """The SparseCtrl network with the generation's condition, or None without a condition.

        A zero scale makes every residual zero: the network is then left out, so that the result is exactly the
        text-to-video one (adding zeros would keep the values but reorder autograd's sums in the guided pass)."""
        if condition is None or params.controlnet_scale == 0:
            return None
        generator = torch.Generator(device=self.vae.device).manual_seed(params.seed + VAE_SEED_OFFSET)
        images = condition.images
        if condition.kind == "scribble":
            images = scribble_strokes(images, params.scribble_invert)
        cond, mask = condition_tensors(
            condition.kind,
            images,
            condition.frames,
            params.num_frames,
            self.vae,
            self.unet.dtype,
            generator,
        )
        return SparseCtrl(self.controlnet, cond, mask, params.controlnet_scale)

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        representation: MotionRepresentation | list[MotionRepresentation] | None,
        module_names: list[str],
        negative_embeds: torch.Tensor,
        positive_embeds: torch.Tensor,
        params: MotionCloneParams,
        report: ProgressCallback,
        should_stop: CancelCheck,
        latents_callback: LatentsCallback | None = None,
        sparsectrl: SparseCtrl | None = None,
    ) -> tuple[torch.Tensor, list[float]]:
        """Run the N DDIM steps; the first G carry the motion-guidance gradient. With `sparsectrl`, every UNet pass
        gets its half of the step's SparseCtrl residuals (computed once per step for [E_neg, E_pos]).

        A clip longer than `params.context_length` runs window by window (`ContextWindows`): `representation` is then
        the list of each window's representation, and each window's loss guides it.

        Returns (x_0, the unweighted motion loss Σ_m L_m of each guided step, averaged over the windows).
        """
        windows = ContextWindows.from_params(params, latents.device, latents.dtype)
        representations = [representation] if isinstance(representation, MotionRepresentation) else representation
        E_neg = negative_embeds.repeat_interleave(windows.length, dim=0)
        E_pos = positive_embeds.repeat_interleave(windows.length, dim=0)
        E_both = torch.cat([E_neg, E_pos])
        alphas_cumprod = self.scheduler.alphas_cumprod
        final_alpha_cumprod = self.scheduler.final_alpha_cumprod
        guided_until = last_block(self.unet, params.motion_guidance_blocks)
        window_sparsectrl = [None if sparsectrl is None else sparsectrl.window(frames) for frames in windows.frames]
        losses: list[torch.Tensor] = []
        total = len(timesteps)
        # With several windows, progress counts window passes (steps × windows): a step of a long clip takes a while.
        passes = len(windows.frames)
        report("denoise", 0, total * passes)
        with capture_temporal_attention(self.unet, module_names, params.attention_precision) as store:
            store.recording = False  # only the guided steps' conditional passes need the maps
            for i, t in enumerate(timesteps.tolist()):
                if should_stop():
                    raise JobCancelled(f"cancelled at denoising step {i} of {total}")
                t_prev = int(timesteps[i + 1]) if i + 1 < total else -1
                guided = i < params.guidance_steps
                weight = 0.0
                if guided:
                    ramp = guidance_ramp(i, params.guidance_steps, params.warm_up_steps, params.cool_down_steps)
                    weight = params.motion_guidance_weight * ramp
                # Window by window (one window of all frames for a short clip); each window's loss guides it alone.
                predictions = []
                for w in range(len(windows.frames)):
                    if w and should_stop():  # a step of a long clip runs many windows: Cancel need not wait for all
                        raise JobCancelled(f"cancelled at denoising step {i} of {total}, window {w + 1} of {passes}")
                    x_w = windows.take(latents, w)
                    # SparseCtrl zeroes the noisy sample it gets: its residuals depend on t, text and condition only.
                    control = None
                    if window_sparsectrl[w] is not None:
                        control = window_sparsectrl[w].residuals(torch.cat([x_w, x_w]), t, E_both)
                    if guided:
                        embeds = (E_neg, E_pos)
                        window_representation = representations[w] if representations is not None else None
                        predictions.append(
                            self._guided_prediction(
                                x_w, t, embeds, control, weight, window_representation, store, guided_until
                            )
                        )
                    else:
                        with torch.no_grad():
                            noise_both = self.unet(
                                torch.cat([x_w, x_w]), t, encoder_hidden_states=E_both, **unet_residuals(control)
                            ).sample
                        predictions.append((*noise_both.chunk(2), None, None))
                    if passes > 1 and w + 1 < passes:
                        report("denoise", i * passes + w + 1, total * passes)
                noise_uncond = windows.blend([prediction[0] for prediction in predictions])
                noise_cond = windows.blend([prediction[1] for prediction in predictions])
                score = None
                if guided:
                    if predictions[0][2] is not None:
                        score = windows.blend([prediction[2] for prediction in predictions])
                    losses.append(torch.stack([prediction[3] for prediction in predictions]).mean())
                noise_pred = self.combine_cfg(noise_uncond, noise_cond, params)
                # x_{t_prev} = DDIM(x_t, ε) − √(1−ᾱ_{t_prev})·√(1−ᾱ_t)·∇L  (the paper's guided update)
                with torch.no_grad():
                    latents = guided_ddim_step(
                        latents, noise_pred, t, t_prev, alphas_cumprod, final_alpha_cumprod, score
                    )
                if latents_callback is not None:
                    latents_callback(i + 1, latents)
                report("denoise", (i + 1) * passes, total * passes)
        return latents, [float(value) for value in torch.stack(losses).float().cpu()] if losses else []

    def _guided_prediction(
        self,
        latents: torch.Tensor,
        t: int,
        embeds: tuple[torch.Tensor, torch.Tensor],
        control: list[torch.Tensor] | None,
        weight: float,
        representation: MotionRepresentation | None,
        store: Any,
        guided_until: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One guided step's predictions for a clip or window: (ε_u, ε_c, w·∇L or None, the unweighted loss)."""
        E_neg, E_pos = embeds
        # ε_u without autograd; ε_c with autograd up to the last guided block, recording A_m
        with torch.no_grad():
            noise_uncond = self.unet(latents, t, encoder_hidden_states=E_neg, **unet_residuals(control, 0, 2)).sample
        store.clear()
        store.recording = True
        if weight == 0:
            # An unguided baseline (weight 0) keeps the guided steps' batching, so that it differs from a guided run
            # by the guidance alone, but needs no autograd: the gradient would be zero.
            with torch.no_grad():
                noise_cond = self.unet(latents, t, encoder_hidden_states=E_pos, **unet_residuals(control, 1, 2)).sample
                mse = motion_loss(store.probs, representation)
            score = None
        else:
            x_g = latents.detach().clone().requires_grad_(True)
            with no_grad_after(self.unet, guided_until):
                noise_cond = self.unet(x_g, t, encoder_hidden_states=E_pos, **unet_residuals(control, 1, 2)).sample
            # L = w·λ(i)·Σ_m MSE(A^gen_m[idx_ref], val_ref), and its gradient with respect to x_t
            mse = motion_loss(store.probs, representation)
            (score,) = torch.autograd.grad(weight * mse, x_g)
            noise_cond = noise_cond.detach()
        store.recording = False
        store.clear()
        return noise_uncond, noise_cond, score, mse.detach()  # the loss is read once after the loop: no host sync

    # ----------------------------------------------------------------------------------------------------------
    # The inversion-based method (paper v1-v3)
    def inversion_guidance_config(self, params: MotionCloneParams) -> InversionGuidanceConfig:
        """Resolve the inversion-mode fields against this model: guided modules, weights, word positions.

        Raises `ParameterError` naming the field (unknown blocks, words missing from their prompt).
        """
        motion_weights: dict[str, float] = {}
        for block, weight in zip(params.inversion_guidance_blocks, params.inversion_block_weights, strict=True):
            try:
                names = guided_module_names(self.unet, [block])
            except ParameterError as error:
                raise ParameterError("inversion_guidance_blocks", str(error).split("` ", 1)[-1]) from error
            motion_weights.update(dict.fromkeys(names, float(weight)))
        semantic_weights: dict[str, float] = {}
        if any(weight != 0 for weight in params.semantic_block_weights):
            for block, weight in zip(params.semantic_guidance_blocks, params.semantic_block_weights, strict=True):
                try:
                    names = guided_module_names(self.unet, [block])
                except ParameterError as error:
                    raise ParameterError("semantic_guidance_blocks", str(error).split("` ", 1)[-1]) from error
                semantic_weights.update(dict.fromkeys(names, float(weight)))
        blocks = [*params.inversion_guidance_blocks, *(params.semantic_guidance_blocks if semantic_weights else ())]
        token_indices = None
        cross_modules: list[str] = []
        if semantic_weights:
            cross_modules = cross_attention_module_names(self.unet, MASK_BLOCK)
            blocks.append(MASK_BLOCK)
            if params.semantic_object_pair is not None:
                reference_word, new_word = params.semantic_object_pair
                token_indices = (
                    self._word_token_index(params.inversion_prompt, reference_word, "semantic_object_pair"),
                    self._word_token_index(params.full_prompt, new_word, "semantic_object_pair"),
                )
        return InversionGuidanceConfig(
            guidance_steps=params.guidance_steps,
            warm_up_steps=params.warm_up_steps,
            cool_down_steps=params.cool_down_steps,
            motion_weights=motion_weights,
            semantic_weights=semantic_weights,
            last_guided_block=last_block(self.unet, blocks),
            cross_attention_modules=cross_modules,
            token_indices=token_indices,
            example_threshold=params.semantic_example_threshold,
            app_threshold=params.semantic_app_threshold,
            sigma=params.semantic_sigma,
            parity_prev_timestep=params.inversion_parity_prev_timestep,
            grad_threshold=params.inversion_grad_threshold,
            attention_precision=params.attention_precision,
            cfg=lambda noise_uncond, noise_cond: self.combine_cfg(noise_uncond, noise_cond, params),
        )

    def obtain_inversion(
        self,
        reference_frames: np.ndarray,
        inversion_embeds: torch.Tensor,
        params: MotionCloneParams,
        directory: Any = None,
        report: ProgressCallback | None = None,
        should_stop: CancelCheck | None = None,
    ) -> tuple[InvertedLatents, str, bool]:
        """DDIM-invert the reference or take it from the cache; returns (latents, key, cache hit).

        The inverted latents stay on the CPU in float16; `directory` (the representation cache's folder, if any)
        also keeps them on disk as safetensors, keyed by a content hash.
        """
        inversion = {
            "inversion_prompt": params.inversion_prompt,
            "inversion_steps": params.inversion_steps,
            "vae_posterior": params.vae_posterior,
            "motion_seed": params.effective_motion_seed,
            "motion_norm": params.motion_norm,
            "dtype": str(self.unet.dtype),
        }
        key = inversion_key(reference_frames, self.model_description, inversion)
        folder = None if directory is None else str(directory)
        if folder not in self._inversion_caches:
            self._inversion_caches[folder] = InversionCache(None if folder is None else f"{folder}/inversion")
        cache = self._inversion_caches[folder]
        cached = cache.get(key)
        if cached is not None:
            return cached, key, True
        generator = torch.Generator(device=self.vae.device).manual_seed(params.effective_motion_seed + VAE_SEED_OFFSET)
        z0 = encode_reference(self.vae, reference_frames, params.vae_posterior, generator).to(self.unet.dtype)
        metadata = {name: str(value) for name, value in inversion.items()}
        metadata["model"] = str(self.model_description)
        inverted = ddim_invert(
            self.unet,
            z0,
            inversion_embeds,
            params.inversion_steps,
            metadata=metadata,
            progress=None if report is None else (lambda step, total: report("extract", step, total)),
            cancel=should_stop,
        )
        cache.put(key, inverted)
        return inverted, key, False

    def _extract_and_denoise(
        self,
        call: _Call,
        latents: torch.Tensor,
        noise: torch.Tensor,
        empty_embeds: torch.Tensor,
        module_names: list[str],
        representation_cache: RepresentationCache | None,
    ) -> tuple[torch.Tensor, list[float], dict[str, Any]]:
        """Steps 5-6 for `motion_source="single-step"`: extract (or reuse) the representation, guided denoising.

        With `guidance_steps=0` nothing reads a representation, so none is extracted."""
        params = call.params
        started = time.perf_counter()
        windows = ContextWindows.from_params(params, noise.device, noise.dtype)
        call.report("extract", 0, len(windows.frames))
        representations, provenance = None, {"representation": None}
        if params.guidance_steps > 0:
            representations, keys, hits = [], [], []
            for w, frames in enumerate(windows.frames):
                if call.should_stop():
                    raise JobCancelled(
                        f"cancelled while extracting the motion of window {w + 1} of {len(windows.frames)}"
                    )
                # Each window's representation from its own frames, as the windows will see them while denoising.
                representation, key, hit = self.obtain_representation(
                    call.reference_frames[frames],
                    windows.take(noise, w),
                    empty_embeds,
                    replace(params, num_frames=len(frames)),
                    representation_cache,
                    window_condition(call.condition, frames),
                    window=None if windows.single else frames,
                )
                representations.append(representation)
                keys.append(key)
                hits.append(hit)
                call.report("extract", w + 1, len(windows.frames))
            key_record = keys[0] if windows.single else keys
            provenance = {"representation": {"key": key_record, "cache_hit": all(hits)}}
        else:
            call.report("extract", len(windows.frames), len(windows.frames))  # nothing to extract without guidance
        call.timings["extract"] = time.perf_counter() - started

        started = time.perf_counter()
        latents, losses = self.denoise(
            latents,
            call.timesteps,
            representations,
            module_names,
            call.negative_embeds,
            call.positive_embeds,
            params,
            call.report,
            call.should_stop,
            call.latents_callback,
            self.prepare_sparsectrl(call.condition, params),
        )
        call.timings["denoise"] = time.perf_counter() - started
        return latents, losses, provenance

    def _invert_and_denoise(
        self, call: _Call, latents: torch.Tensor, representation_cache: RepresentationCache | None
    ) -> tuple[torch.Tensor, list[float], dict[str, Any]]:
        """Steps 5-6 for `motion_source="inversion"`: DDIM-invert the reference (or reuse it), guided denoising with
        the time-dependent reference attention."""
        params, report = call.params, call.report
        config = self.inversion_guidance_config(params)
        inversion_embeds = self.encode_prompt(params.inversion_prompt)
        if params.guidance_steps == 0:  # no guided step reads the inverted reference: a baseline skips the inversion
            inverted, key, hit = InvertedLatents({}, {}), None, False
        else:
            started = time.perf_counter()
            report("extract", 0, params.inversion_steps)
            directory = None if representation_cache is None else representation_cache.directory
            inverted, key, hit = self.obtain_inversion(
                call.reference_frames, inversion_embeds, params, directory, report, call.should_stop
            )
            call.timings["extract"] = time.perf_counter() - started
            report("extract", params.inversion_steps, params.inversion_steps)

        started = time.perf_counter()
        latents, losses = denoise_inversion(
            self.unet,
            self.scheduler.alphas_cumprod,
            self.scheduler.final_alpha_cumprod,
            latents,
            call.timesteps,
            inverted,
            call.negative_embeds,
            call.positive_embeds,
            inversion_embeds,
            config,
            report,
            call.should_stop,
            call.latents_callback,
        )
        call.timings["denoise"] = time.perf_counter() - started
        inversion_info = {
            "key": key,
            "cache_hit": hit,
            "steps": params.inversion_steps,
            "host_bytes": inverted.nbytes(),
            "semantic_guidance": bool(config.semantic_weights),
            "token_indices": None if config.token_indices is None else list(config.token_indices),
        }
        return latents, losses, {"representation": {"key": key, "cache_hit": hit}, "inversion": inversion_info}

    @staticmethod
    def combine_cfg(noise_uncond: torch.Tensor, noise_cond: torch.Tensor, params: MotionCloneParams) -> torch.Tensor:
        """Classifier-free guidance.

        Official form ε_c + s(ε_c − ε_u), so 7.5 there is 8.5 in the standard form ε_u + s(ε_c − ε_u) (bug B2).
        """
        if params.cfg_form == "official":
            return noise_cond + params.cfg_scale * (noise_cond - noise_uncond)
        if params.cfg_form == "standard":
            return noise_uncond + params.cfg_scale * (noise_cond - noise_uncond)
        raise ParameterError("cfg_form", f"unknown form {params.cfg_form!r}")

    @torch.no_grad()
    def decode_latents_to_frames(
        self, latents: torch.Tensor, chunk_size: int, report: ProgressCallback, should_stop: CancelCheck
    ) -> np.ndarray:
        """x_0 -> uint8 (F, H, W, 3): VAE decode in chunks, (v/2 + 0.5) clamped, ×255 truncated (official)."""
        latents = latents[0].permute(1, 0, 2, 3) / self.vae.config.scaling_factor
        chunks = list(latents.split(chunk_size))
        decoded = []
        for index, chunk in enumerate(chunks):
            if should_stop():
                raise JobCancelled(f"cancelled while decoding chunk {index + 1} of {len(chunks)}")
            report("decode", index, len(chunks))
            video = self.vae.decode(chunk.to(self.vae.dtype)).sample
            # uint8 per chunk: float32 copies of a long clip's whole video would take 12 times its bytes.
            decoded.append(((video.float() / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8).cpu())
        report("decode", len(chunks), len(chunks))
        return torch.cat(decoded).permute(0, 2, 3, 1).numpy()

    # ----------------------------------------------------------------------------------------------------------
    def describe_result(
        self,
        params: MotionCloneParams,
        timesteps: torch.Tensor,
        timings: dict[str, float],
        losses: list[float],
    ) -> dict[str, Any]:
        return {
            "seed": params.seed,
            "motion_seed": params.effective_motion_seed,
            "noise_coupled": params.motion_seed is None,
            "guided": is_guided(params),  # False: an unguided baseline (guidance_steps 0 or guidance weight 0)
            "parameters": params.to_dict(),
            "model": dict(self.model_description),
            "device": str(self.unet.device),
            "dtype": str(self.unet.dtype).removeprefix("torch."),
            "timesteps": timesteps.tolist(),
            "motion_loss": losses,
            "timings_s": {stage: round(seconds, 4) for stage, seconds in timings.items()},
            "peak_memory_bytes": self._peak_memory(),
            "versions": {
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "python": platform.python_version(),
            },
        }

    def _reset_peak_memory(self) -> None:
        if self.unet.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.unet.device)

    def _peak_memory(self) -> dict[str, int]:
        if self.unet.device.type == "cuda":
            return {"cuda_max_allocated": int(torch.cuda.max_memory_allocated(self.unet.device))}
        # On the CPU only the process-wide peak resident set is measurable (kilobytes on Linux).
        return {"process_max_rss": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}


CAMERA_MOVE = (
    "most of the reference's set moves (a camera move): the shared noise travels with the reference's optical flow"
    " (noise_correlation_form reference-flow) instead of one subject's patch"
)
NO_SUBJECT_PATH = "nothing in the reference moves against a still background, so the subject was left where it forms"


def correlate_frames(
    noise: torch.Tensor,
    rho: float,
    form: str,
    generator: torch.Generator,
    source_maps: np.ndarray | None = None,
    placement: SubjectPlacement | None = None,
) -> torch.Tensor:
    """Noise of shape (B, C, F, H, W), standard normal per frame, made correlated across frames (PYoCo).

    "shared": every frame gets √ρ·ε_shared + √(1−ρ)·ε_frame, so any two frames correlate by ρ. "progressive": each
    frame is ρ·(the previous frame's noise) + √(1−ρ²)·ε_frame, so frames k apart correlate by ρ^k. "reference-flow":
    as "shared", with ε_shared carried along the reference's motion by `source_maps` (`reference_source_maps`). A
    `placement` moves the shared noise's subject patch along its path. The shared draw comes after the frames' own
    noise, so that ρ = 0 leaves the official noise untouched.
    """
    if form == "progressive":
        frames = [noise[:, :, 0]]
        for index in range(1, noise.shape[2]):
            frames.append(rho * frames[-1] + math.sqrt(1 - rho**2) * noise[:, :, index])
        return torch.stack(frames, dim=2)
    shape = (*noise.shape[:2], 1, *noise.shape[3:])
    shared = torch.randn(shape, generator=generator, device=noise.device, dtype=noise.dtype)
    if source_maps is not None:
        shared = warp_shared_noise(shared, source_maps)
    if placement is not None:
        shared = placement.apply(shared)
    return math.sqrt(rho) * shared + math.sqrt(1 - rho) * noise
