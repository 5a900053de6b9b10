"""CLIP text alignment and temporal consistency, as MotionClone's Table 1 reports them. No bpy.

- text alignment: mean over frames of cos(CLIP image embedding of the frame, CLIP text embedding of the prompt);
- temporal consistency: mean over consecutive frame pairs of cos(image embedding t, image embedding t + 1).

Raw cosines (not torchmetrics' max(100·cos, 0)). The model comes from a local folder in transformers' layout
(`CLIPModel` + `CLIPProcessor`, loaded with local_files_only=True); nothing is downloaded. Without a folder both
metrics are reported as "not measured", never estimated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelNotFoundError

NO_CHECKPOINT = "no local CLIP checkpoint given (--clip-model)"
DEFAULT_BATCH = 8
TEXT_ALIGNMENT_METHOD = "mean over frames of cos(image embedding, text embedding of the prompt)"
TEMPORAL_CONSISTENCY_METHOD = "mean over consecutive frame pairs of cos(image embedding t, image embedding t+1)"
COSINE = "raw cosine in [-1, 1]"


def settings_of(model_path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The settings every entry records, measured or not: the CLIP folder (None: none given) and the cosine's form."""
    return {"model": None if model_path is None else str(model_path), "cosine": COSINE}


def not_measured(reason: str, method: str, model_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A metric entry that says why it has no value, and what it would have measured with which settings."""
    return {"value": None, "status": "not measured", "reason": reason, "method": method, **settings_of(model_path)}


def clip_scores(
    frames: np.ndarray,
    prompt: str | None,
    model_path: str | os.PathLike[str] | None,
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, dict[str, Any]]:
    """CLIP text alignment and temporal consistency of a clip.

    Args:
        frames: (T, H, W, 3) uint8 RGB frames.
        prompt: the text the frames should show; None leaves text alignment unmeasured.
        model_path: local folder with a CLIPModel and its CLIPProcessor; None leaves both unmeasured.
        device: torch device for the model.
        batch_size: frames per forward pass.

    Returns:
        {"clip_text_alignment": entry, "clip_temporal_consistency": entry}; each entry holds value, status,
        method, model and cosine, and (measured) the number of frames or pairs, or (not measured) the reason.

    Raises:
        ModelNotFoundError: the folder is missing or holds no loadable CLIP model and processor.
    """
    if model_path is None:
        return {
            "clip_text_alignment": not_measured(NO_CHECKPOINT, TEXT_ALIGNMENT_METHOD),
            "clip_temporal_consistency": not_measured(NO_CHECKPOINT, TEMPORAL_CONSISTENCY_METHOD),
        }
    model, processor = load_clip(model_path, device)
    image_embeds = embed_images(model, processor, frames, device, batch_size)
    described = settings_of(model_path)

    if len(image_embeds) < 2:
        reason = "temporal consistency needs at least 2 frames"
        consistency = not_measured(reason, TEMPORAL_CONSISTENCY_METHOD, model_path)
    else:
        pair_cosines = (image_embeds[:-1] * image_embeds[1:]).sum(axis=1)
        consistency = {
            "value": float(pair_cosines.mean()),
            "status": "measured",
            "method": TEMPORAL_CONSISTENCY_METHOD,
            "pairs": len(pair_cosines),
            **described,
        }
    if not prompt:
        reason = "no prompt given (--prompt) and none found in result.json"
        alignment = not_measured(reason, TEXT_ALIGNMENT_METHOD, model_path)
    else:
        text_embed = embed_text(model, processor, prompt, device)
        cosines = image_embeds @ text_embed
        alignment = {
            "value": float(cosines.mean()),
            "status": "measured",
            "method": TEXT_ALIGNMENT_METHOD,
            "prompt": prompt,
            "frames": len(cosines),
            **described,
        }
    return {"clip_text_alignment": alignment, "clip_temporal_consistency": consistency}


def load_clip(model_path: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, Any]:
    """CLIPModel and CLIPProcessor from a local folder, offline; ModelNotFoundError if either is missing."""
    from transformers import CLIPModel, CLIPProcessor

    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(
            f"CLIP checkpoint folder {path} does not exist: pass a local folder holding a CLIPModel and its "
            "processor (config.json, weights, tokenizer and preprocessor files), e.g. saved with save_pretrained"
        )
    try:
        model = CLIPModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)
    except Exception as error:  # OSError for missing files, ValueError for a wrong model type, ...
        raise ModelNotFoundError(f"could not load a CLIP model and processor from {path}: {error}") from error
    return model, processor


def embed_images(model: Any, processor: Any, frames: np.ndarray, device: str, batch_size: int) -> np.ndarray:
    """(T, D) float64 unit-length CLIP image embeddings."""
    import torch

    chunks = []
    with torch.no_grad():
        for start in range(0, len(frames), max(1, batch_size)):
            batch = [np.ascontiguousarray(frame) for frame in frames[start : start + max(1, batch_size)]]
            pixels = processor(images=batch, return_tensors="pt")["pixel_values"].to(device, model.dtype)
            chunks.append(_pooled(model.get_image_features(pixel_values=pixels)))
    return _normalise(torch.cat(chunks))


def embed_text(model: Any, processor: Any, prompt: str, device: str) -> np.ndarray:
    """(D,) float64 unit-length CLIP text embedding, the prompt truncated to the model's context."""
    import torch

    tokens = processor(text=[prompt], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        features = model.get_text_features(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        )
    return _normalise(_pooled(features))[0]


def _pooled(features: Any) -> Any:
    """transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor."""
    return features.pooler_output if hasattr(features, "pooler_output") else features


def _normalise(embeds: Any) -> np.ndarray:
    array = embeds.detach().float().cpu().numpy().astype(np.float64)
    return array / np.maximum(np.linalg.norm(array, axis=-1, keepdims=True), 1e-12)
