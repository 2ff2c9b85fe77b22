"""The one GPU probe: how many GPUs this process sees and how much memory the first one has.

CUDA_VISIBLE_DEVICES applies (a generation replica sees only its own GPUs). torch is imported on call, so the
modules that ask (the launcher, the generation layout, the preflight) stay light to import.
"""

from __future__ import annotations

GIB = 2**30


def visible_gpus() -> tuple[int, float | None]:
    """(GPUs visible to this process, memory of the first in GiB); (0, None) without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return 0, None
    count = torch.cuda.device_count()
    return count, (torch.cuda.get_device_properties(0).total_memory / GIB if count else None)


def gpu_count() -> int:
    return visible_gpus()[0]
