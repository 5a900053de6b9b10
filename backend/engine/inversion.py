"""DDIM inversion of the reference video for the inversion-based MotionClone (paper v1-v3). No bpy.

The reference latents z_0 are walked *up* the noise levels with the inversion prompt c_inv (conditional branch only,
no classifier-free guidance). With ᾱ_{-1} = 1 and k = 1000 // S the step ratio of S inversion steps:

    ε   = ε_θ(x_{t−k}, t, c_inv)
    x_t = √ᾱ_t · (x_{t−k} − √(1−ᾱ_{t−k})·ε) / √ᾱ_{t−k} + √(1−ᾱ_t)·ε

which is diffusers' `DDIMInverseScheduler` with `steps_offset=0` (the DDIM config's `steps_offset=1` would index
ᾱ_1000). S = 1000 is the official setting (every t from 0 to 999 is stored).

Memory (bug B13): the inverted latents x_t are kept on the CPU in float16 (or on disk as safetensors, cached by a
content hash like the single-step representation) and moved to the device one timestep at a time (`InvertedLatents.at`).
"""

import contextlib
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, UNetMotionModel
from safetensors.torch import load_file, safe_open

from ..errors import JobCancelled
from .cache_files import save_atomically, store_in_cache

FORMAT_VERSION = "1"


def inverse_scheduler() -> DDIMInverseScheduler:
    """The inverse DDIM scheduler (SD-1.5 betas, ᾱ_{-1} = 1, `steps_offset=0`, "leading" spacing)."""
    return DDIMInverseScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="leading",
    )


@dataclass
class InvertedLatents:
    """The inverted reference x^ref_t for every inversion timestep t, kept off the device.

    Attributes:
        latents: timestep → x^ref_t (1, 4, F, h, w) on the CPU (float16 by default).
        metadata: plain strings (model, inversion parameters).
        noise_preds: timestep → ε_θ(x_{t−k}, t, c_inv) of the step that produced x_t; only filled when
            `ddim_invert(record_noise=True)` (tests); never saved.
    """

    latents: dict[int, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    noise_preds: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def timesteps(self) -> list[int]:
        """The stored timesteps, ascending."""
        return sorted(self.latents)

    def nearest_timestep(self, t: int) -> int:
        """The stored timestep closest to t (t itself with 1000 inversion steps); ties go to the smaller one."""
        return min(self.latents, key=lambda stored: (abs(stored - t), stored))

    def at(self, t: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """x^ref_t on `device` in `dtype`: only this one timestep is moved (nearest stored t, see above)."""
        return self.latents[self.nearest_timestep(t)].to(device=device, dtype=dtype)

    def nbytes(self) -> int:
        """Host memory held by the latents."""
        return sum(latent.numel() * latent.element_size() for latent in self.latents.values())

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file atomically (one tensor per timestep); returns its path."""
        tensors = {f"t{t}": latent.detach().contiguous().cpu() for t, latent in self.latents.items()}
        metadata = {**self.metadata, "format_version": FORMAT_VERSION}
        return save_atomically(tensors, Path(path), metadata)

    @classmethod
    def load(cls, path: str | Path) -> "InvertedLatents":
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        metadata.pop("format_version", None)
        tensors = load_file(str(path))
        return cls({int(name.removeprefix("t")): tensor for name, tensor in tensors.items()}, metadata)


def inversion_key(frames: np.ndarray, model_description: dict[str, Any], inversion: dict[str, Any]) -> str:
    """Content hash of the prepared reference frames, the model and the inversion parameters."""
    digest = hashlib.sha256(b"ddim-inversion")
    digest.update(json.dumps([list(frames.shape), str(frames.dtype)]).encode())
    digest.update(np.ascontiguousarray(frames).tobytes())
    digest.update(json.dumps(model_description, sort_keys=True, default=str).encode())
    digest.update(json.dumps(inversion, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class InversionCache:
    """Inverted latents by key: a small in-memory LRU (host memory) in front of an optional safetensors folder.

    Args:
        directory: where `<key>.safetensors` files go; None keeps them in memory only.
        memory_items: inversions kept in host memory (about 0.5 GB each at 16×512×512 with 1000 steps).
    """

    def __init__(self, directory: str | Path | None = None, memory_items: int = 2) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.memory_items = memory_items
        self._memory: OrderedDict[str, InvertedLatents] = OrderedDict()

    def get(self, key: str) -> InvertedLatents | None:
        """The cached inversion, or None."""
        path = None if self.directory is None else self.directory / f"{key}.safetensors"
        if key in self._memory:
            self._memory.move_to_end(key)
            self._mark_used(path)
            return self._memory[key]
        if path is not None and path.is_file():
            try:
                inverted = InvertedLatents.load(path)
            except FileNotFoundError:  # purged between the check and the read
                return None
            self._mark_used(path)
            self._remember(key, inverted)
            return inverted
        return None

    @staticmethod
    def _mark_used(path: Path | None) -> None:
        """Last used now: the server's purge keeps files in use."""
        if path is not None:
            with contextlib.suppress(OSError):  # purged meanwhile, or never written: the copy in memory serves
                os.utime(path)

    def put(self, key: str, inverted: InvertedLatents) -> None:
        """Remember `inverted` (and write it to the folder, if any)."""
        self._remember(key, inverted)
        if self.directory is not None:
            store_in_cache(lambda: inverted.save(self.directory / f"{key}.safetensors"), "inverted reference")

    def _remember(self, key: str, inverted: InvertedLatents) -> None:
        self._memory[key] = inverted
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)


@torch.no_grad()
def ddim_invert(
    unet: UNetMotionModel,
    z0: torch.Tensor,
    prompt_embeds: torch.Tensor,
    num_steps: int,
    store_dtype: torch.dtype = torch.float16,
    record_noise: bool = False,
    metadata: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> InvertedLatents:
    """DDIM-invert z_0 with the inversion prompt over `num_steps` steps.

    Args:
        unet: the AnimateDiff UNet.
        z0: reference latents (1, 4, F, h, w) on the UNet's device.
        prompt_embeds: CLIP embedding of the inversion prompt (1, 77, C); conditional branch only, no CFG.
        num_steps: S; the inverted latents exist at t = 0, k, 2k, … with k = 1000 // S (S = 1000: every t).
        store_dtype: dtype of the host copies (float16 as official; float32 for exact round trips).
        record_noise: also keep every ε on the host (for reconstruction tests).
        metadata: strings stored with the result.
        progress: called as `progress(step, total)` after every step.
        cancel: called before every step; returning True raises `JobCancelled`.

    Returns:
        `InvertedLatents` keyed by timestep, on the CPU.
    """
    scheduler = inverse_scheduler()
    scheduler.set_timesteps(num_steps)
    encoder_hidden_states = prompt_embeds.repeat_interleave(z0.shape[2], dim=0)
    x = z0
    inverted = InvertedLatents({}, dict(metadata or {}))
    total = len(scheduler.timesteps)
    for step, t in enumerate(scheduler.timesteps.tolist()):
        if cancel is not None and cancel():
            raise JobCancelled(f"cancelled at inversion step {step} of {total}")
        noise_pred = unet(x, t, encoder_hidden_states=encoder_hidden_states).sample
        # x_t from x_{t−k}: the scheduler evaluates ᾱ_{t−k} (ᾱ_{-k} = 1) and ᾱ_t as float32 host scalars and does
        # the arithmetic in the latents' dtype, operation for operation as the official `next_step`.
        x = scheduler.step(noise_pred, t, x).prev_sample
        inverted.latents[int(t)] = x.detach().to("cpu", store_dtype)
        if record_noise:
            inverted.noise_preds[int(t)] = noise_pred.detach().to("cpu", store_dtype)
        if progress is not None:
            progress(step + 1, total)
    return inverted
