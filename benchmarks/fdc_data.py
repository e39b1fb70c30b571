"""Demo real-domain patches for the FDC experiments (benchmarks only, not the pipeline's patches stage).

The scikit-image photos, blurred with the 13x13 sigma-3 Gaussian (the synthetic
"camera"), cut into 128x128 patches at stride 96; flat patches (luma std < 0.02)
dropped; the first 7 photos train, the last 2 are held out.
"""

from __future__ import annotations

import torch

from fca.data.builtin import PHOTOS, load_photo
from fca.frequency import to_luma
from fca.kernels import conv_per_sample, gaussian


def photo(name: str) -> torch.Tensor:
    """[1, 3, H, W] float in [0, 1]."""
    return torch.from_numpy(load_photo(name)).permute(2, 0, 1).unsqueeze(0).contiguous()


def crop_patches(img: torch.Tensor, size: int = 128, stride: int = 96, min_std: float = 0.02) -> torch.Tensor:
    """[1, 3, H, W] -> [n, 3, size, size]: a grid of patches, flat ones dropped."""
    out = []
    _, _, h, w = img.shape
    for y in range(0, h - size + 1, stride):
        for x in range(0, w - size + 1, stride):
            p = img[:, :, y : y + size, x : x + size]
            if to_luma(p).std().item() >= min_std:
                out.append(p[0])
    return torch.stack(out)


def demo_patches(size: int = 128, stride: int = 96, sigma: float = 3.0, ksize: int = 13, held_out: int = 2, max_per_image: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train R, held-out R, train I, held-out I): blurred (real-domain) and clean patches [N, 3, size, size]."""
    k = torch.from_numpy(gaussian(ksize, sigma)).float()
    tr, te, tri, tei = [], [], [], []
    for i, name in enumerate(PHOTOS):
        clean = photo(name)
        blurred = conv_per_sample(clean, k)
        # crop both with the same grid; decide flatness on the blurred one
        pb = crop_patches(blurred, size, stride, 0.0)
        pc = crop_patches(clean, size, stride, 0.0)
        keep = torch.tensor([to_luma(p[None]).std().item() >= 0.02 for p in pb]).nonzero().flatten()
        if keep.numel() > max_per_image:  # as the patches stage does: a random subset per image
            keep = keep[torch.randperm(keep.numel(), generator=torch.Generator().manual_seed(i))[:max_per_image]]
        dst = (te, tei) if i >= len(PHOTOS) - held_out else (tr, tri)
        dst[0].append(pb[keep])
        dst[1].append(pc[keep])
    return torch.cat(tr), torch.cat(te), torch.cat(tri), torch.cat(tei)


def cached_demo_patches(path: str = "/tmp/fca_fdc_demo_patches.pt") -> tuple[torch.Tensor, ...]:
    """demo_patches(), kept in a file between runs (the 13x13 blur of the big photos takes a while)."""
    import os

    if os.path.exists(path):
        return tuple(torch.load(path))
    out = demo_patches()
    torch.save(out, path + ".tmp")
    os.replace(path + ".tmp", path)
    return out


if __name__ == "__main__":
    a, b, c, d = cached_demo_patches()
    print(a.shape, b.shape)
