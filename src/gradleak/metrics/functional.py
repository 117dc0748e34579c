"""Per-sample image metrics on (N, C, H, W) batches in [0, 1] pixel space.

Every function returns one value per sample (a float64 tensor): callers average, take
the max, or match first. Computation is in float64 so results agree with
scikit-image to well below the tolerances the tests use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gradleak.errors import GradleakError

# PSNR of identical images is +inf; an infinite value would poison means and is not
# valid JSON, so the MSE is floored at data_range**2 * 10**(-PSNR_CAP_DB / 10).
PSNR_CAP_DB = 100.0

# Wang et al. 2004 constants and scikit-image's Gaussian truncation (11 taps at sigma 1.5).
SSIM_K1 = 0.01
SSIM_K2 = 0.03
GAUSSIAN_TRUNCATE = 3.5


def _as_batch(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise GradleakError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise GradleakError(f"{name} must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise GradleakError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x.detach().to(torch.float64)


def _same_shape(x: object, y: object, names: tuple[str, str] = ("x", "y")) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_batch(x, names[0]), _as_batch(y, names[1])
    if a.shape != b.shape:
        raise GradleakError(
            f"{names[0]} and {names[1]} must have the same shape, "
            f"got {names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)}"
        )
    return a, b.to(a.device)


def _check_range(data_range: float) -> float:
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise GradleakError(f"data_range must be a positive finite number, got {data_range!r}")
    return float(data_range)


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample, shape (N,)."""
    a, b = _same_shape(x, y)
    return ((a - b) ** 2).flatten(1).mean(dim=1)


def psnr_from_mse(err: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB from per-sample MSE, capped at `PSNR_CAP_DB` (identical images)."""
    r = _check_range(data_range)
    floor = r * r * 10.0 ** (-PSNR_CAP_DB / 10.0)
    return 10.0 * torch.log10(r * r / err.clamp_min(floor))


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per sample in dB, shape (N,).

    Identical images give `PSNR_CAP_DB` (100 dB) instead of +inf.
    """
    return psnr_from_mse(mse(x, y), data_range)


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)  # as scipy.ndimage computes it
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _reflect_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    # scipy's "reflect" (edge sample repeated: d c b a | a b c d), valid for any radius,
    # also when the filter is wider than the image
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _gaussian_filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (B, H, W) with reflect borders, output (B, H, W)."""
    radius = (kernel.numel() - 1) // 2
    _, h, w = x.shape
    padded = x[:, _reflect_index(h, radius, x.device)][:, :, _reflect_index(w, radius, x.device)]
    out = F.conv2d(padded.unsqueeze(1), kernel.view(1, 1, -1, 1))
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    return out.squeeze(1)


def effective_win_size(height: int, width: int, win_size: int = 11) -> int:
    """`win_size`, shrunk to the largest odd size that fits min(height, width)."""
    if not (isinstance(win_size, int) and win_size >= 1 and win_size % 2 == 1):
        raise GradleakError(f"win_size must be a positive odd integer, got {win_size!r}")
    side = min(height, width)
    if side < win_size:
        win_size = side if side % 2 == 1 else side - 1
    return win_size


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity per sample (Wang et al. 2004), shape (N,).

    Local statistics use a Gaussian window (std `sigma`, truncated at 3.5 sigma: 11
    taps at 1.5) and population covariance; the SSIM map is averaged over the pixels at
    least (win_size - 1) // 2 from the border, then over channels. This is
    scikit-image's `structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False)`. Images smaller than `win_size` use the largest odd
    window that fits; where the Gaussian reaches past the border the image is
    reflected, as scikit-image does.
    """
    a, b = _same_shape(x, y)
    r = _check_range(data_range)
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise GradleakError(f"sigma must be a positive finite number, got {sigma!r}")
    n, c, h, w = a.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.float64, device=a.device)
    win = effective_win_size(h, w, win_size)
    kernel = _gaussian_kernel(float(sigma), a.dtype, a.device)

    # one filter pass over all five statistics
    stats = torch.cat([a, b, a * a, b * b, a * b]).reshape(5 * n * c, h, w)
    ux, uy, uxx, uyy, uxy = _gaussian_filter(stats, kernel).reshape(5, n, c, h, w)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (SSIM_K1 * r) ** 2, (SSIM_K2 * r) ** 2
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    smap = smap[:, :, pad : h - pad, pad : w - pad]
    return smap.flatten(1).mean(dim=1)


def pairwise_mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MSE between every x[i] and every y[j], shape (N, M)."""
    a, b = _as_batch(x, "x"), _as_batch(y, "y")
    if a.shape[1:] != b.shape[1:]:
        raise GradleakError(
            f"x and y must hold images of the same shape, got x {tuple(a.shape)} and y {tuple(b.shape)}"
        )
    fa, fb = a.flatten(1), b.to(a.device).flatten(1)
    # direct differences row by row: exact (no |a|^2 + |b|^2 - 2ab cancellation) and
    # memory stays at one (M, D) block
    out = torch.empty(fa.shape[0], fb.shape[0], dtype=torch.float64, device=a.device)
    for i in range(fa.shape[0]):
        out[i] = ((fb - fa[i]) ** 2).mean(dim=1)
    return out


def pairwise_ssim(x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """SSIM between every x[i] and every y[j], shape (N, M); kwargs go to `ssim`."""
    a, b = _as_batch(x, "x"), _as_batch(y, "y")
    if a.shape[1:] != b.shape[1:]:
        raise GradleakError(
            f"x and y must hold images of the same shape, got x {tuple(a.shape)} and y {tuple(b.shape)}"
        )
    b = b.to(a.device)
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for i in range(a.shape[0]):
        out[i] = ssim(a[i : i + 1].expand_as(b), b, **kwargs)
    return out


__all__ = [
    "PSNR_CAP_DB",
    "effective_win_size",
    "mse",
    "pairwise_mse",
    "pairwise_ssim",
    "psnr",
    "psnr_from_mse",
    "ssim",
]
