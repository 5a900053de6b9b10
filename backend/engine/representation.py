"""The motion representation: sparse temporal-attention maps of the reference video. No bpy.

Extraction noises the reference latents once to t* and runs the UNet once with the empty prompt, stopping right
after the last guided block. For every guided temporal attention A ∈ R^{(B·h·w) × heads × F × F} it keeps the top-k
entries of each query row: their values (model dtype) and key-frame indices (uint8, since F ≤ 255).

Representations are stored as safetensors with their metadata, cached by a content hash of the reference frames,
the model and the extraction parameters, so one reference serves many prompts and seeds. Never pickle.
"""

import contextlib
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, UNetMotionModel
from safetensors.torch import load_file, safe_open

from ..atomic_files import TEMPORARY_SUFFIX
from .attention_capture import capture_temporal_attention, guided_module_names
from .cache_files import SAFETENSORS_TEMPORARY_PREFIX, save_atomically, store_in_cache
from .partial_unet import last_block, run_unet_until

FORMAT_VERSION = "1"


@dataclass
class MotionRepresentation:
    """Top-k values and indices of the reference's temporal attention, per guided module.

    Attributes:
        values: module name -> (B·h·w, heads, F, k) attention weights.
        indices: module name -> (B·h·w, heads, F, k) uint8 key-frame indices.
        metadata: plain strings (model, extraction parameters, frame hash).
    """

    values: dict[str, torch.Tensor]
    indices: dict[str, torch.Tensor]
    metadata: dict[str, str]

    @property
    def module_names(self) -> list[str]:
        return list(self.values)

    def to(self, device: torch.device | str) -> "MotionRepresentation":
        return MotionRepresentation(
            {name: value.to(device) for name, value in self.values.items()},
            {name: index.to(device) for name, index in self.indices.items()},
            dict(self.metadata),
        )

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file atomically; returns its path."""
        path = Path(path)
        tensors = {}
        for name in self.values:
            tensors[f"{name}.values"] = self.values[name].detach().contiguous().cpu()
            tensors[f"{name}.indices"] = self.indices[name].detach().contiguous().cpu()
        metadata = {**self.metadata, "format_version": FORMAT_VERSION, "modules": json.dumps(self.module_names)}
        return save_atomically(tensors, path, metadata)

    @classmethod
    def load(cls, path: str | Path) -> "MotionRepresentation":
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
        names = json.loads(metadata.pop("modules"))
        metadata.pop("format_version", None)
        return cls(
            {name: tensors[f"{name}.values"] for name in names},
            {name: tensors[f"{name}.indices"] for name in names},
            metadata,
        )


def representation_key(frames: np.ndarray, model_description: dict[str, Any], extraction: dict[str, Any]) -> str:
    """Content hash of the prepared reference frames, the model and the extraction parameters."""
    digest = hashlib.sha256()
    digest.update(json.dumps([list(frames.shape), str(frames.dtype)]).encode())
    digest.update(np.ascontiguousarray(frames).tobytes())
    digest.update(json.dumps(model_description, sort_keys=True, default=str).encode())
    digest.update(json.dumps(extraction, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def tensor_digest(tensor: torch.Tensor) -> str:
    """Content hash of a tensor's values, whatever its device or dtype (float32 on the CPU, so bfloat16 hashes too)."""
    values = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(json.dumps(list(values.shape)).encode() + values.tobytes()).hexdigest()


class RepresentationCache:
    """Representations by key: a small in-memory LRU (host memory, so a GPU's memory is free between jobs) in front
    of an optional folder of safetensors files. `get` returns tensors on the CPU."""

    def __init__(self, directory: str | Path | None = None, memory_items: int = 8) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.memory_items = memory_items
        self._memory: OrderedDict[str, MotionRepresentation] = OrderedDict()
        self._lock = threading.Lock()  # the server purges on its socket thread while a worker reads and writes

    def get(self, key: str) -> MotionRepresentation | None:
        with self._lock:
            remembered = self._memory.get(key)
            if remembered is not None:
                self._memory.move_to_end(key)
        path = self._path(key)
        if remembered is not None:
            self._mark_used(path)
            return remembered
        if self.directory is not None and path.is_file():
            try:
                representation = MotionRepresentation.load(path)
            except FileNotFoundError:  # purged between the check and the read
                return None
            self._mark_used(path)
            self._remember(key, representation)
            return representation
        return None

    def put(self, key: str, representation: MotionRepresentation) -> None:
        self._remember(key, representation.to("cpu"))
        if self.directory is not None:
            store_in_cache(lambda: representation.save(self._path(key)), "motion representation")

    def _mark_used(self, path: Path) -> None:
        """Last used now, from memory too: `purge_unused` keeps what is in use."""
        if self.directory is not None:
            with contextlib.suppress(FileNotFoundError):  # purged meanwhile: the copy in memory serves this job
                os.utime(path)

    def purge_unused(self, max_age_s: float, now: float | None = None) -> list[str]:
        """Delete the files not written or read for `max_age_s` seconds; returns their keys. The inverted latents in
        its `inversion/` folder, and files a writer left half written (it stopped mid-write), go the same way."""
        if self.directory is None or not self.directory.is_dir():
            return []
        now = time.time() if now is None else now
        purged = []
        for path in self.directory.rglob("*"):
            ours = path.name.endswith((".safetensors", TEMPORARY_SUFFIX)) or path.name.startswith(
                SAFETENSORS_TEMPORARY_PREFIX
            )
            if not ours or not path.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):  # another purge or a rename took it meanwhile
                if now - path.stat().st_mtime > max_age_s:
                    path.unlink(missing_ok=True)
                    if path.parent == self.directory and path.suffix == ".safetensors":
                        with self._lock:
                            self._memory.pop(path.stem, None)
                        purged.append(path.stem)
        return purged

    def _path(self, key: str) -> Path:
        return Path(self.directory or ".") / f"{key}.safetensors"

    def _remember(self, key: str, representation: MotionRepresentation) -> None:
        with self._lock:
            self._memory[key] = representation
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)


def frames_to_tensor(frames: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> (F, 3, H, W) in [−1, 1], as the official `x / 127.5 − 1`."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return (video.to(device=device, dtype=torch.float32) / 127.5 - 1).to(dtype)


@torch.no_grad()
def encode_reference(
    vae: AutoencoderKL,
    frames: np.ndarray,
    posterior: str,
    generator: torch.Generator,
    chunk_size: int = 8,
) -> torch.Tensor:
    """z_0 = scaling_factor · VAE.encode(frames), shape (1, 4, F, h, w).

    `posterior` is "sample" (official; drawn from `generator`, never from the global RNG) or "mode".
    """
    video = frames_to_tensor(frames, vae.device, vae.dtype)
    latents = []
    for chunk in video.split(chunk_size):
        distribution = vae.encode(chunk).latent_dist
        latents.append(distribution.sample(generator) if posterior == "sample" else distribution.mode())
    z0 = torch.cat(latents) * vae.config.scaling_factor
    return z0.permute(1, 0, 2, 3).unsqueeze(0)


def noise_latents(z0: torch.Tensor, noise: torch.Tensor, t: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε."""
    alpha_prod_t = alphas_cumprod[t].to(torch.float32)
    return (alpha_prod_t.sqrt() * z0.float() + (1 - alpha_prod_t).sqrt() * noise.float()).to(z0.dtype)


@torch.no_grad()
def extract_motion_representation(
    unet: UNetMotionModel,
    alphas_cumprod: torch.Tensor,
    z0: torch.Tensor,
    noise: torch.Tensor,
    empty_prompt_embeds: torch.Tensor,
    add_noise_step: int,
    blocks: tuple[str, ...],
    top_k: int,
    precision: str,
    metadata: dict[str, str] | None = None,
    unet_kwargs: dict[str, Any] | None = None,
) -> MotionRepresentation:
    """Noise z_0 to t*, run the UNet once up to the last guided block, keep the top-k of each attention row.

    Args:
        unet: the AnimateDiff UNet.
        alphas_cumprod: the scheduler's ᾱ table.
        z0: reference latents (1, 4, F, h, w).
        noise: ε of the same shape (the initial latent of the generation when coupled).
        empty_prompt_embeds: CLIP embedding of "" (1, 77, C); no CFG.
        add_noise_step: t*.
        blocks: guided UNet blocks.
        top_k: entries kept per query row.
        precision: attention precision ("parity" or "accurate").
        metadata: strings stored with the representation.
        unet_kwargs: passed to the UNet forward (SparseCtrl residuals).
    """
    module_names = guided_module_names(unet, blocks)
    x_t = noise_latents(z0, noise, add_noise_step, alphas_cumprod)
    num_frames = z0.shape[2]
    with capture_temporal_attention(unet, module_names, precision) as store:
        store.recording = True
        run_unet_until(
            unet,
            last_block(unet, blocks),
            x_t,
            add_noise_step,
            encoder_hidden_states=empty_prompt_embeds.repeat_interleave(num_frames, dim=0),
            **(unet_kwargs or {}),
        )
        probs = dict(store.probs)
    values, indices = {}, {}
    for name in module_names:
        top_values, top_indices = probs[name].topk(top_k, dim=-1)
        values[name] = top_values
        indices[name] = top_indices.to(torch.uint8)
    return MotionRepresentation(values, indices, dict(metadata or {}))


def motion_loss(probs: dict[str, torch.Tensor], reference: MotionRepresentation) -> torch.Tensor:
    """Σ_m mean((A^gen_m gathered at the reference indices − reference values)²)."""
    module_losses = []
    for name, reference_values in reference.values.items():
        generated = probs[name].gather(-1, reference.indices[name].long())
        module_losses.append(torch.nn.functional.mse_loss(generated, reference_values.to(generated.dtype).detach()))
    return torch.stack(module_losses).sum()
