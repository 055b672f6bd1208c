"""Spectral rendering: camera responses for any band set, HSI -> RGB, and colour matching to a photo.

A camera response (SRF) here is a ``(3, C)`` float32 matrix, rows R, G, B, one column per band of the
HSI, each row summing to 1 so that a spectrally flat surface renders grey at its own level. Rendering is
``rgb = srf @ hsi`` per pixel, in linear light.

Where the responses come from (``camera_srf``):
- ``"cie1931"``: the CIE 1931 2-degree colour matching functions (from colour-science) taken to linear
  sRGB primaries; the negative lobes are clipped, which gives a physically realisable camera close to sRGB.
- ``"gaussian"``: three Gaussian channels at 600, 540 and 460 nm (FWHM about 80 nm), a generic RGB camera.
- a path to a CSV table: wavelengths in the first column and channel columns named R, G, B (G1/G2 are
  averaged), or the transposed layout with a first row of wavelengths and rows named R, G, B. Lines
  starting with ``#`` are comments. Tables are interpolated linearly to the band centres.

Band sets that miss the visible range. If fewer than 3 bands lie in 400-700 nm (or the chosen response
is zero on the bands given), a false-colour fallback is used: three Gaussian channels spread over the
band set's own range (R at 5/6, G at 1/2, B at 1/6 of it), as remote-sensing false-colour composites do.
``srf_is_fallback`` tells whether that happened.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from sschsr.errors import InputError

Camera = Literal["cie1931", "gaussian"]
VISIBLE_NM = (400.0, 700.0)


def default_wavelengths(n_bands: int, start: float = 400.0, stop: float = 700.0) -> np.ndarray:
    """Band centres spread evenly over ``[start, stop]`` nm (CAVE: 31 bands, 400-700 in 10 nm steps).

    Returns:
        ``(C,)`` float64 in nm.
    """
    if n_bands < 1:
        raise ValueError(f"n_bands must be >= 1, got {n_bands}")
    return np.linspace(start, stop, n_bands) if n_bands > 1 else np.array([(start + stop) / 2])


def _gaussian_rows(wavelengths: np.ndarray, centres, fwhm) -> np.ndarray:
    wl = np.asarray(wavelengths, dtype=np.float64)[None, :]
    c = np.asarray(centres, dtype=np.float64)[:, None]
    sigma = np.asarray(fwhm, dtype=np.float64)[:, None] / 2.3548  # FWHM = 2 sqrt(2 ln 2) sigma
    return np.exp(-0.5 * ((wl - c) / sigma) ** 2)


def _cie1931_rgb(wavelengths: np.ndarray) -> np.ndarray:
    import colour

    cmfs = colour.MSDS_CMFS["CIE 1931 2 Degree Standard Observer"]
    xyz = np.stack(
        [np.interp(wavelengths, cmfs.wavelengths, cmfs.values[:, i], left=0, right=0) for i in range(3)]
    )
    to_rgb = np.asarray(colour.RGB_COLOURSPACES["sRGB"].matrix_XYZ_to_RGB)
    return np.clip(to_rgb @ xyz, 0.0, None)


def _read_table(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a response table into (wavelengths (N,), {channel name: (N,)})."""
    try:
        rows = [
            r for r in csv.reader(path.read_text().splitlines()) if r and not r[0].lstrip().startswith("#")
        ]
    except OSError as e:
        raise InputError(f"cannot read spectral response table {path}: {e}") from e
    rows = [[c.strip() for c in r if c.strip() != ""] for r in rows]
    rows = [r for r in rows if r]

    def numeric(v: str) -> bool:
        try:
            float(v)
            return True
        except ValueError:
            return False

    if len(rows) < 2:
        raise InputError(f"spectral response table {path} has fewer than two rows")
    if (
        all(numeric(v) for v in rows[0][1:]) and len(rows[0]) > 4
    ):  # transposed: wavelengths along the first row
        wl = np.array([float(v) for v in rows[0][1:]])
        chans = {r[0].upper(): np.array([float(v) for v in r[1:]]) for r in rows[1:]}
    else:
        header = [h.upper() for h in rows[0]]
        data = np.array([[float(v) for v in r[: len(header)]] for r in rows[1:]])
        wl = data[:, 0]
        chans = {h: data[:, i] for i, h in enumerate(header) if i > 0}
    return wl, chans


def _table_rgb(path: Path, wavelengths: np.ndarray) -> np.ndarray:
    wl, chans = _read_table(path)
    out = []
    for name in ("R", "G", "B"):
        cols = [v for k, v in chans.items() if k == name or (k.startswith(name) and k[1:].isdigit())]
        if not cols:
            raise InputError(
                f"spectral response table {path} has no {name} channel (channels: {sorted(chans)})"
            )
        curve = np.mean(cols, axis=0)
        out.append(np.interp(wavelengths, wl, curve, left=0, right=0))
    return np.clip(np.stack(out), 0.0, None)


def _false_colour(wavelengths: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(wavelengths)), float(np.max(wavelengths))
    span = max(hi - lo, 1e-6)
    centres = [lo + span * 5 / 6, lo + span / 2, lo + span / 6]
    return _gaussian_rows(wavelengths, centres, [span / 3] * 3)


def srf_is_fallback(wavelengths: np.ndarray, camera: Camera | str | Path = "cie1931") -> bool:
    """Whether ``camera_srf`` falls back to false colour for this band set (see the module docstring)."""
    wl = np.asarray(wavelengths, dtype=np.float64)
    n_visible = int(np.sum((wl >= VISIBLE_NM[0]) & (wl <= VISIBLE_NM[1])))
    if n_visible < 3:
        return True
    return bool(np.any(_raw_srf(wl, camera).sum(axis=1) <= 0))


def _raw_srf(wavelengths: np.ndarray, camera: Camera | str | Path) -> np.ndarray:
    if camera == "cie1931":
        return _cie1931_rgb(wavelengths)
    if camera == "gaussian":
        return _gaussian_rows(wavelengths, [600.0, 540.0, 460.0], [80.0, 80.0, 80.0])
    path = Path(camera)
    if not path.is_file():
        raise InputError(
            f"unknown camera response {camera!r}: expected 'cie1931', 'gaussian' or an existing CSV file"
        )
    return _table_rgb(path, wavelengths)


def camera_srf(wavelengths: np.ndarray, camera: Camera | str | Path = "cie1931") -> np.ndarray:
    """The ``(3, C)`` response of a camera sampled at the given band centres, rows summing to 1.

    Args:
        wavelengths: ``(C,)`` band centres in nm.
        camera: ``"cie1931"``, ``"gaussian"`` or a path to a response table (module docstring).

    Returns:
        ``(3, C)`` float32, non-negative, each row sums to 1.

    Example:
        >>> srf = camera_srf(default_wavelengths(31))
        >>> srf.shape, bool(np.allclose(srf.sum(1), 1))
        ((3, 31), True)
    """
    wl = np.asarray(wavelengths, dtype=np.float64)
    if wl.ndim != 1 or wl.size == 0 or not np.all(np.isfinite(wl)):
        raise InputError(f"wavelengths must be a non-empty 1-D finite array, got shape {wl.shape}")
    raw = _false_colour(wl) if srf_is_fallback(wl, camera) else _raw_srf(wl, camera)
    return (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)


def random_camera_srf(wavelengths: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Another plausible RGB camera: Gaussian channels with random peaks and widths, mixed with CIE.

    Peaks are drawn around 600 / 540 / 460 nm (+-25 nm), widths 50-120 nm, and the result is blended
    with the CIE-based response by a random weight, so channels overlap as real sensors do.

    Returns:
        ``(3, C)`` float32, rows summing to 1.
    """
    wl = np.asarray(wavelengths, dtype=np.float64)
    if srf_is_fallback(wl):
        return camera_srf(wl)
    u = torch.rand(7, generator=generator, dtype=torch.float64).numpy()
    centres = np.array([600.0, 540.0, 460.0]) + (u[:3] - 0.5) * 50.0
    widths = 50.0 + u[3:6] * 70.0
    g = _gaussian_rows(wl, centres, widths)
    g = g / g.sum(axis=1, keepdims=True)
    mix = u[6]
    srf = mix * g + (1 - mix) * camera_srf(wl, "cie1931")
    return (srf / srf.sum(axis=1, keepdims=True)).astype(np.float32)


def render(hsi: Tensor, srf: Tensor | np.ndarray) -> Tensor:
    """Render an HSI through a camera response, in linear light.

    Args:
        hsi: ``(..., C, H, W)``.
        srf: ``(3, C)``.

    Returns:
        ``(..., 3, H, W)``, same dtype and device as ``hsi``.
    """
    srf = torch.as_tensor(srf, dtype=hsi.dtype, device=hsi.device)
    if srf.ndim != 2 or srf.shape[0] != 3 or srf.shape[1] != hsi.shape[-3]:
        raise ValueError(
            f"srf must be (3, {hsi.shape[-3]}) for an HSI with {hsi.shape[-3]} bands, got {tuple(srf.shape)}"
        )
    return torch.einsum("rc,...chw->...rhw", srf, hsi)


def match_moments(src: Tensor, ref: Tensor, eps: float = 1e-6) -> Tensor:
    """Give each channel of ``src`` the mean and standard deviation of the same channel of ``ref``.

    Args:
        src: ``(..., 3, H, W)``; ref: ``(..., 3, H', W')`` (sizes may differ).

    Returns:
        ``(..., 3, H, W)``.
    """
    s_mu, s_sd = src.mean((-2, -1), keepdim=True), src.std((-2, -1), keepdim=True)
    r_mu, r_sd = ref.mean((-2, -1), keepdim=True), ref.std((-2, -1), keepdim=True)
    return (src - s_mu) / (s_sd + eps) * r_sd + r_mu


def match_histograms(src: Tensor, ref: Tensor) -> Tensor:
    """Per-channel histogram matching: each value of ``src`` takes the ``ref`` value of the same rank.

    Exact for equal sizes; otherwise ``ref``'s sorted values are interpolated at ``src``'s quantiles.

    Args:
        src: ``(..., C, H, W)``; ref: ``(..., C, H', W')``.

    Returns:
        ``(..., C, H, W)`` with (up to interpolation) the value distribution of ``ref`` per channel.
    """
    lead = src.shape[:-2]
    s = src.reshape(-1, src.shape[-2] * src.shape[-1])
    r = ref.reshape(-1, ref.shape[-2] * ref.shape[-1]).to(src.dtype)
    r_sorted = r.sort(dim=1).values
    order = s.argsort(dim=1)
    n_s, n_r = s.shape[1], r.shape[1]
    if n_s == n_r:
        matched = r_sorted
    else:
        q = torch.linspace(0, n_r - 1, n_s, device=src.device, dtype=src.dtype)
        i0 = q.floor().long().clamp(max=n_r - 1)
        i1 = (i0 + 1).clamp(max=n_r - 1)
        t = q - i0
        matched = r_sorted[:, i0] * (1 - t) + r_sorted[:, i1] * t
    out = torch.empty_like(s)
    out.scatter_(1, order, matched)
    return out.reshape(*lead, *src.shape[-2:])


def argsort_rows(a: np.ndarray) -> np.ndarray:
    """Stable argsort of each row of a float array (last axis), as one sort of 64-bit keys.

    Key = the value's float32 bits mapped to an unsigned integer of the same order, shifted up 32 bits,
    plus the index. Sorting keys uses numpy's vectorised integer sort, 2-3x faster than ``np.argsort`` on
    CPUs without a vectorised argsort (AVX2): the same permutation as ``np.argsort(kind="stable")``
    (ties in index order; -0.0 before +0.0).

    Args:
        a: ``(..., n)``, cast to float32; n < 2**32.

    Returns:
        ``(..., n)`` intp indices.
    """
    n = a.shape[-1]
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    u = np.where(u >> 31, ~u, u | np.uint32(0x80000000))  # negative: all bits flipped; positive: sign set
    keys = (u.astype(np.uint64) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
    keys.sort(axis=-1)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)


def fast_match_histograms(src: Tensor, ref: Tensor) -> Tensor:
    """:func:`sschsr.data.spectral.match_histograms` for images of equal size, through numpy's sorts
    (several times faster than torch's on CPU). Ties in ``src`` are broken in pixel order
    (:func:`argsort_rows`), torch's sort may break them in another.

    ``ref`` is sorted once for every image of ``src`` it serves: ``(C, H, W)`` for all of them, or one per
    image. Tensors that need a gradient, live off the CPU or differ in size take the torch path.

    Args:
        src: ``(..., C, H, W)``.
        ref: ``(C, H, W)`` or ``(..., C, H, W)`` with the leading dimensions of ``src``.

    Returns:
        the shape of ``src``: each value replaced by the ``ref`` value of the same rank, per image and channel.
    """
    if src.ndim < 3 or ref.ndim < 3:
        raise ValueError(f"expected (..., C, H, W) images, got {tuple(src.shape)} and {tuple(ref.shape)}")
    if (
        ref.shape[-3:] != src.shape[-3:]
        or src.requires_grad
        or src.device.type != "cpu"
        or ref.device.type != "cpu"
    ):
        return match_histograms(src, ref.expand(*src.shape[:-3], *ref.shape[-3:]))
    c, n = src.shape[-3], src.shape[-2] * src.shape[-1]
    s = src.detach().reshape(-1, c, n).float().numpy()
    r = np.sort(ref.detach().reshape(-1, c, n).float().numpy(), axis=-1)
    if r.shape[0] not in (1, s.shape[0]):
        raise ValueError(f"ref {tuple(ref.shape)} does not match the images of src {tuple(src.shape)}")
    rows = s.shape[0] * c
    order = argsort_rows(s.reshape(rows, n))
    order += np.arange(0, rows * n, n, dtype=np.intp)[:, None]  # flat indices (put_along_axis is slower)
    out = np.empty(rows * n, dtype=np.float32)
    out[order.reshape(-1)] = np.broadcast_to(r, s.shape).reshape(-1)
    return torch.from_numpy(out).reshape(src.shape).to(src.dtype)


def colour_match(src: Tensor, ref: Tensor, match: Literal["histogram", "moments"] = "histogram") -> Tensor:
    """Give each image of ``src`` the colours of ``ref``, per channel: ``"histogram"`` (each value takes the
    ``ref`` value of the same rank, :func:`fast_match_histograms`) or ``"moments"`` (mean and standard
    deviation, :func:`sschsr.data.spectral.match_moments`).

    Args:
        src: ``(..., 3, H, W)``; ref: ``(3, H, W)`` (for every image) or ``(..., 3, H, W)``.
    """
    if match == "histogram":
        return fast_match_histograms(src, ref)
    if match == "moments":
        return match_moments(src, ref)
    raise InputError(f"match must be 'histogram' or 'moments', got {match!r}")


def render_rgb(
    cube: Tensor, srf: Tensor | np.ndarray, ref: Tensor, match: Literal["histogram", "moments"] = "histogram"
) -> Tensor:
    """An HSI seen as ``rgb_hsi`` and ``rgb_hr`` are: through the camera response, colour-matched to the
    reference (:func:`colour_match`), clamped to [0, 1].

    :class:`~sschsr.data.pair_dataset.PairDataset` makes ``rgb_hsi`` from ``lr_up`` and ``rgb_hr`` from ``hr`` with it, and
    :func:`sschsr.lit.warp.render_target` makes ``rgb_hr`` for batches that lack it.

    Args:
        cube: ``(..., C, H, W)``.
        srf: ``(3, C)``, or ``(..., 3, C)`` one per image.
        ref: ``(3, H, W)`` or ``(..., 3, H, W)``.
        match: ``"histogram"`` or ``"moments"``.

    Returns:
        ``(..., 3, H, W)`` in [0, 1], the dtype of ``cube``.
    """
    rgb = render_linear(cube, srf)
    return colour_match(rgb, ref.to(rgb.dtype), match).clamp(0, 1)


def render_linear(cube: Tensor, srf: Tensor | np.ndarray) -> Tensor:
    """``(..., C, H, W)`` through ``srf`` ``(3, C)`` (or ``(..., 3, C)``) -> ``(..., 3, H, W)``, in linear light:
    :func:`sschsr.data.spectral.render` as one matrix product over the pixels (no copy of the cube)."""
    srf = torch.as_tensor(srf).to(device=cube.device, dtype=cube.dtype)
    c, h, w = cube.shape[-3:]
    if srf.shape[-2:] != (3, c):
        raise ValueError(f"srf must be (3, {c}) for an HSI with {c} bands, got {tuple(srf.shape)}")
    return (srf @ cube.reshape(*cube.shape[:-2], h * w)).reshape(*cube.shape[:-3], 3, h, w)
