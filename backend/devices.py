"""Whether a torch device named by the user can be used here, said before any model loads."""


def unusable_device(device: str, here: bool = True) -> str | None:
    """Why `device` cannot be used (a message without the flag's name), or None when it can. `here`: on this
    machine; otherwise only its name is checked (Ray workers on other nodes)."""
    import torch

    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError):
        return f"must be cpu, cuda or cuda:N, got {device!r}"
    if not here:
        return None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        return f"{device!r} asks for CUDA, which this machine's torch cannot use: use cpu"
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        return f"{device!r}: this machine has {count} CUDA devices: use cuda:0 to cuda:{count - 1}, or cpu"
    return None
