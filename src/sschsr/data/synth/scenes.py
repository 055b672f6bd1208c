"""Procedural hyperspectral scenes: the project's embedded default dataset.

A scene is built the way a painter would: a background (a wall, or ground and sky split at a horizon,
sometimes a floor of tiles in perspective), then objects from large to small, each one covering what lies
under it. What is painted is not colour but *material abundances*: ``K`` materials, each with a smooth
reflectance spectrum, and an abundance map ``A`` of shape ``(K, H, W)``; a shading map ``S`` (geometry
and illumination) multiplies the result, and a specular map adds the (flat) illuminant:

    hsi[c] = S * sum_k spectrum[k, c] * A[k] + specular          (clamped to [0, 1])

so that any band count costs one small matrix product at the end, and the spectra of the scene are
mixtures of a few plausible endmembers, as in real scenes.

Shapes: ellipses (flat discs or shaded spheres with highlights), convex polygons, rotated rectangles, thin
bars, blobs (thresholded smooth noise), with anti-aliased sharp edges. Fills: flat, mottled (multi-octave
noise), gratings, stripes and checkers (sharp). Shading: a global light direction, smooth illumination
falloff, drop shadows, texture in the shading.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sschsr.data.spectral import camera_srf, default_wavelengths

REFLECTANCE_RANGE = (0.02, 0.95)  # darkest and brightest plausible diffuse reflectance
# a material's camera-weighted over band-mean reflectance, see random_spectra
LIGHTNESS_AGREEMENT = (0.88, 1.12)


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        h = w = size
    else:
        h, w = (int(v) for v in size)
    if h < 4 or w < 4:
        raise ValueError(f"scene size must be at least 4 x 4, got {h} x {w}")
    return h, w


def numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from one draw of ``generator`` (scalar draws read better in numpy)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


def fbm(
    height: int,
    width: int,
    rng: np.random.Generator,
    octaves: int = 4,
    base_cells: int = 3,
    persistence: float = 0.55,
) -> Tensor:
    """Multi-octave value noise (fractional Brownian motion), smooth at every scale.

    Each octave is a random grid of ``base_cells * 2**o`` cells upsampled bicubically; octaves finer
    than 2 pixels per cell are skipped.

    Returns:
        ``(H, W)`` float32 with mean 0 and standard deviation 1.
    """
    longest = max(height, width)
    n_oct = 0
    while n_oct < octaves and longest / (base_cells * 2**n_oct) >= 2:
        n_oct += 1
    n_oct = max(n_oct, 1)

    def cells(n: int) -> tuple[int, int]:
        return max(2, round(n * height / longest)) + 1, max(2, round(n * width / longest)) + 1

    # sum the octaves on the finest octave's grid (small), then upsample once to the full size: one
    # full-resolution interpolation instead of one per octave
    fine = cells(base_cells * 2 ** (n_oct - 1))
    acc = torch.zeros(1, 1, *fine)
    for o in range(n_oct):
        grid = torch.from_numpy(rng.standard_normal((1, 1, *cells(base_cells * 2**o))).astype(np.float32))
        if grid.shape[-2:] != fine:
            grid = F.interpolate(grid, size=fine, mode="bicubic", align_corners=True)
        acc += persistence**o * grid
    out = F.interpolate(acc, size=(height, width), mode="bicubic", align_corners=True)[0, 0]
    return (out - out.mean()) / (out.std() + 1e-6)


def random_spectra(wavelengths: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` smooth reflectance spectra sampled at ``wavelengths``.

    Each is a base level plus one to three broad Gaussian bumps or dips and, often, a sigmoid edge (the
    shape of most pigments and of vegetation's red edge); about one in five is near-neutral (greys,
    whites, blacks). Widths scale with the band set's span, so a 400-1000 nm sensor gets features too.

    Returns:
        ``(n, C)`` float32 in ``REFLECTANCE_RANGE``.
    """
    wl = np.asarray(wavelengths, dtype=np.float64)
    centre = 0.5 * (float(wl.min()) + float(wl.max()))
    span = max(float(wl.max() - wl.min()), 60.0)  # a few bands (or one) still get features of some width
    lo, hi = centre - span / 2, centre + span / 2
    out = np.empty((n, wl.size))
    # how a camera weighs the bands for lightness (the mean of its R, G, B): sums to 1
    camera_weight = camera_srf(wl).astype(np.float64).mean(axis=0)
    # lightness (mean reflectance), stratified on a log scale: the materials of a scene differ clearly in
    # lightness, as natural ones do, not only in hue (two pigments of equal lightness and different hue
    # would make the scene's luminance depend on the camera more than on what is where)
    lo_l, hi_l = np.log(0.04), np.log(0.8)
    levels = np.exp(lo_l + (hi_l - lo_l) * (rng.permutation(n) + rng.uniform(0.15, 0.85, n)) / n)
    for k in range(n):
        if rng.random() < 0.2:  # near-neutral
            x = 1.0 + rng.uniform(-0.15, 0.15) * (wl - centre) / span
        else:
            x = np.full(wl.shape, rng.uniform(0.02, 0.35))
            for _ in range(rng.integers(1, 4)):
                c = rng.uniform(lo - 0.05 * span, hi + 0.05 * span)
                s = rng.uniform(0.07, 0.25) * span
                a = rng.uniform(0.1, 0.7) * (1.0 if rng.random() < 0.8 else -0.5)
                x = x + a * np.exp(-0.5 * ((wl - c) / s) ** 2)
            if rng.random() < 0.5:
                c = rng.uniform(lo + 0.1 * span, hi - 0.1 * span)
                s = rng.uniform(0.02, 0.08) * span
                a = rng.uniform(0.2, 0.7) * (1.0 if rng.random() < 0.7 else -1.0)
                x = x + a / (1.0 + np.exp(-(wl - c) / s))
            x = np.clip(x, 0.01, None)
        x = x / x.mean()
        # keep the material's lightness about the same whether weighted as a camera sees (little weight at
        # the ends of the visible range) or as the band mean does: damp the shape towards flat until the
        # camera-weighted mean is within LIGHTNESS_AGREEMENT of the band mean
        r = float(camera_weight @ x)
        lo_r, hi_r = LIGHTNESS_AGREEMENT
        if not lo_r <= r <= hi_r:
            x = 1.0 + ((hi_r if r > hi_r else lo_r) - 1.0) / (r - 1.0) * (x - 1.0)
        out[k] = x * levels[k]
    return np.clip(out, *REFLECTANCE_RANGE).astype(np.float32)


def _aa(sd: Tensor, soft: float = 1.0) -> Tensor:
    """Anti-aliased coverage from a signed distance in pixels (negative inside)."""
    return (0.5 - sd / soft).clamp_(0.0, 1.0)


def _stripes(u: Tensor, period: float, duty: float) -> Tensor:
    """Sharp anti-aliased stripes along coordinate ``u`` (pixels): 1 on the stripes, 0 between."""
    d = period * ((u / period).frac().abs() - 0.5).abs()  # distance to the nearest stripe centre line
    return (duty * period / 2 - d + 0.5).clamp_(0.0, 1.0)


class _Canvas:
    """Abundances, shading and specular maps being painted; objects update a bounding box only."""

    def __init__(self, h: int, w: int, n_materials: int, rng: np.random.Generator):
        self.h, self.w, self.rng = h, w, rng
        self.A = torch.zeros(n_materials, h, w)
        self.S = torch.ones(h, w)
        self.spec = torch.zeros(h, w)
        self.disp = torch.zeros(h, w)  # relative disparity (1 / depth) of the visible surface
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
        )
        self.X, self.Y = xs, ys
        self.scale = float(max(h, w))
        # a texture bank shared by the objects (generating noise per object would dominate the cost)
        self.bank = [fbm(h, w, rng, octaves=5, base_cells=b) for b in (2, 4, 8)]
        ang = rng.uniform(0, 2 * math.pi)
        elev = rng.uniform(0.35, 1.1)
        self.light = np.array(
            [math.cos(ang) * math.cos(elev), math.sin(ang) * math.cos(elev), math.sin(elev)]
        )

    def texture(self, ys: slice, xs: slice) -> Tensor:
        t = self.bank[self.rng.integers(len(self.bank))][ys, xs]
        if self.rng.random() < 0.5:
            t = -t
        return t

    def fill(self, ys: slice, xs: slice, background: bool = False) -> Tensor | None:
        """A mixing field between two materials in [0, 1], or None for a flat fill."""
        rng = self.rng
        # large regions are mostly plain or mottled: a wall of stripes looks like a test chart
        p = [0.42, 0.49, 0.03, 0.03, 0.03] if background else [0.35, 0.25, 0.1, 0.15, 0.15]
        kind = rng.choice(["flat", "mottled", "grating", "stripes", "checker"], p=p)
        if kind == "flat":
            return None
        if kind == "mottled":
            t = self.texture(ys, xs)
            return torch.sigmoid((t - rng.uniform(-0.8, 0.8)) * rng.uniform(1.0, 6.0))
        th = rng.uniform(0, math.pi)
        u = self.X[ys, xs] * math.cos(th) + self.Y[ys, xs] * math.sin(th)
        period = rng.uniform(4.0, max(6.0, 0.12 * self.scale))
        if kind == "grating":
            return 0.5 + 0.5 * torch.sin(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi))
        if kind == "stripes":
            return _stripes(u + rng.uniform(0, period), period, rng.uniform(0.2, 0.6))
        v = -self.X[ys, xs] * math.sin(th) + self.Y[ys, xs] * math.cos(th)
        m1 = _stripes(u + rng.uniform(0, period), period, 0.5)
        m2 = _stripes(v + rng.uniform(0, period), period, 0.5)
        return m1 + m2 - 2 * m1 * m2

    def paint(
        self,
        ys: slice,
        xs: slice,
        cov: Tensor,
        mat_a: int,
        mat_b: int,
        mix: Tensor | None,
        shade: Tensor | float,
        spec: Tensor | None = None,
        disp: Tensor | float | None = None,
    ) -> None:
        if disp is not None:  # the surface in front owns the pixel where it covers more than half of it
            d = self.disp[ys, xs]
            d.copy_(torch.where(cov > 0.5, disp if isinstance(disp, Tensor) else torch.tensor(disp), d))
        a = self.A[:, ys, xs]
        a.mul_(1 - cov)
        if mix is None:
            a[mat_a] += cov
        else:
            a[mat_a] += cov * (1 - mix)
            a[mat_b] += cov * mix
        s = self.S[ys, xs]
        s.mul_(1 - cov).add_(cov * shade)
        p = self.spec[ys, xs]
        p.mul_(1 - cov)
        if spec is not None:
            p.add_(cov * spec)

    def shadow(self, ys: slice, xs: slice, cov: Tensor, strength: float) -> None:
        self.S[ys, xs].mul_(1 - strength * cov)


def _bbox(cx: float, cy: float, rx: float, ry: float, h: int, w: int) -> tuple[slice, slice] | None:
    x0, x1 = max(0, int(cx - rx) - 2), min(w, int(cx + rx) + 3)
    y0, y1 = max(0, int(cy - ry) - 2), min(h, int(cy + ry) + 3)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _shape(kind: str, cv: _Canvas, cx: float, cy: float, r: float, soft: float = 1.0):
    """Coverage of one shape in its bounding box, plus surface normals for shaded spheres.

    Returns:
        ``(ys, xs, coverage, normals or None)`` or None when the shape misses the canvas.
    """
    rng, h, w = cv.rng, cv.h, cv.w
    th = rng.uniform(0, math.pi)
    c, s = math.cos(th), math.sin(th)
    if kind == "ellipse":
        a, b = r, r * rng.uniform(0.5, 1.0)
        box = _bbox(cx, cy, r + soft, r + soft, h, w)
        if box is None:
            return None
        ys, xs = box
        dx, dy = cv.X[ys, xs] - cx, cv.Y[ys, xs] - cy
        u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
        rho = torch.sqrt(u * u + v * v)
        cov = _aa((rho - 1) * b, soft)
        nz = (1 - rho * rho).clamp(min=0).sqrt()
        # normal of the ellipsoid, back in image axes
        normals = (u * c - v * s, u * s + v * c, nz)
        return ys, xs, cov, normals
    if kind in ("polygon", "rectangle", "bar"):
        if kind == "polygon":
            n = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = r * rng.uniform(0.6, 1.0, n)
        elif kind == "rectangle":
            ar = rng.uniform(0.3, 1.0)
            half = np.arctan(ar)
            angles = np.array([half, math.pi - half, math.pi + half, 2 * math.pi - half]) + th
            radii = np.full(4, r)
        else:  # a long thin bar: poles, wires, table legs
            half = math.atan(rng.uniform(0.03, 0.12))
            angles = np.array([half, math.pi - half, math.pi + half, 2 * math.pi - half]) + th
            radii = np.full(4, r * 1.5)
        px, py = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
        box = _bbox(cx, cy, float(np.abs(px - cx).max()) + soft, float(np.abs(py - cy).max()) + soft, h, w)
        if box is None:
            return None
        ys, xs = box
        X, Y = cv.X[ys, xs], cv.Y[ys, xs]
        sd = torch.full(X.shape, -1e9)
        # convex polygon: signed distance = max over edges of the distance to the edge's line
        order = np.argsort(np.arctan2(py - cy, px - cx))
        px, py = px[order], py[order]
        for i in range(len(px)):
            x0, y0, x1, y1 = px[i], py[i], px[(i + 1) % len(px)], py[(i + 1) % len(px)]
            ex, ey = x1 - x0, y1 - y0
            norm = math.hypot(ex, ey) + 1e-9
            # outward normal of a counter-clockwise (in image axes: y down) polygon
            nx, ny = ey / norm, -ex / norm
            sd = torch.maximum(sd, (X - x0) * nx + (Y - y0) * ny)
        return ys, xs, _aa(sd, soft), None
    # blob: smooth noise thresholded inside a radial falloff, so it stays one compact lump
    box = _bbox(cx, cy, r * 1.3, r * 1.3, h, w)
    if box is None:
        return None
    ys, xs = box
    dx, dy = (cv.X[ys, xs] - cx) / r, (cv.Y[ys, xs] - cy) / r
    f = 1.0 - (dx * dx + dy * dy) + 0.35 * cv.texture(ys, xs)
    return ys, xs, (f * r * 0.5 / soft + 0.5).clamp(0, 1), None


def _background(cv: _Canvas, n_mat: int) -> None:
    rng, h, w = cv.rng, cv.h, cv.w
    full = (slice(0, h), slice(0, w))
    ones = torch.ones(h, w)
    a, b = rng.choice(n_mat, 2, replace=False)
    # a far wall, slightly slanted
    gx, gy = rng.uniform(-0.1, 0.1, 2)
    wall = 0.1 + gx * (cv.X / w - 0.5) + gy * (cv.Y / h - 0.5)
    cv.paint(
        *full, ones, int(a), int(b), cv.fill(*full, background=True), float(rng.uniform(0.6, 1.0)), None, wall
    )
    if rng.random() < 0.6:  # ground below a tilted horizon
        yh = rng.uniform(0.2, 0.7) * h
        slope = rng.uniform(-0.15, 0.15)
        line = yh + slope * (cv.X - w / 2)
        cov = _aa(line - cv.Y)
        a, b = rng.choice(n_mat, 2, replace=False)
        ground_depth = (cv.Y - line).clamp(min=1.0)
        if rng.random() < 0.35:  # tiles in perspective on a ground plane seen from a camera at height c
            # pinhole with focal length w: the ground point under pixel (x, y) is at (x c / d, w c / d)
            c = rng.uniform(0.15, 0.5) * h
            gu = (cv.X - w / 2) * c / ground_depth
            gv = w * c / ground_depth
            period = rng.uniform(8.0, 30.0)
            m1, m2 = _stripes(gu + rng.uniform(0, period), period, 0.5), _stripes(gv, period, 0.5)
            mix = m1 + m2 - 2 * m1 * m2
            # far tiles shrink below a few pixels: fade the pattern to its mean instead of aliasing
            apparent = period * ground_depth**2 / (w * c)  # the tiles' height on screen, pixels
            mix = 0.5 + (mix - 0.5) * (apparent / 4 - 0.5).clamp(0, 1)
        else:
            mix = cv.fill(*full, background=True)
        shade = 0.55 + 0.45 * (ground_depth / h).clamp(0, 1) ** 0.5
        # on a ground plane disparity grows linearly with the distance below the horizon
        cv.paint(*full, cov, int(a), int(b), mix, shade, None, 0.1 + 0.6 * (cv.Y - line).clamp(min=0) / h)


def _objects(cv: _Canvas, n_mat: int) -> None:
    rng, h, w = cv.rng, cv.h, cv.w
    n_obj = int(rng.integers(8, 20))
    radii = np.sort(cv.scale * np.exp(rng.uniform(np.log(0.04), np.log(0.28), n_obj)))[::-1]
    kinds = rng.choice(["ellipse", "polygon", "rectangle", "bar", "blob"], n_obj, p=[0.3, 0.2, 0.2, 0.1, 0.2])
    L = cv.light
    for r, kind in zip(radii, kinds, strict=True):
        cx, cy = rng.uniform(0.0, 1.0) * w, rng.uniform(0.05, 1.0) * h
        if rng.random() < 0.5:  # drop shadow first, offset away from the light
            off = r * rng.uniform(0.1, 0.3)
            shp = _shape(str(kind), cv, cx - L[0] * off, cy - L[1] * off, r, soft=max(1.0, 0.15 * r))
            if shp is not None:
                cv.shadow(shp[0], shp[1], shp[2], float(rng.uniform(0.2, 0.5)))
        shp = _shape(str(kind), cv, cx, cy, r)
        if shp is None:
            continue
        ys, xs, cov, normals = shp
        a, b = (int(v) for v in rng.choice(n_mat, 2, replace=False))
        mix = cv.fill(ys, xs)
        base = float(rng.uniform(0.55, 1.0))
        spec = None
        if normals is not None and rng.random() < 0.7:  # a shaded sphere, Lambert plus Blinn-Phong
            nx, ny, nz = normals
            ndl = (nx * L[0] + ny * L[1] + nz * L[2]).clamp(min=0)
            ambient = rng.uniform(0.15, 0.4)
            shade = base * (ambient + (1 - ambient) * ndl)
            if rng.random() < 0.6:
                hv = L + np.array([0.0, 0.0, 1.0])
                hv = hv / np.linalg.norm(hv)
                ndh = (nx * hv[0] + ny * hv[1] + nz * hv[2]).clamp(min=0)
                spec = rng.uniform(0.1, 0.5) * ndh ** float(rng.uniform(10, 60))
        else:  # a flat surface facing some way: a gentle gradient
            gx, gy = rng.uniform(-0.5, 0.5, 2) / r
            shade = base * (1 + gx * (cv.X[ys, xs] - cx) + gy * (cv.Y[ys, xs] - cy)).clamp(0.4, 1.2)
        if rng.random() < 0.5:  # texture in the shading (bumps, grain)
            shade = shade * (1 + rng.uniform(0.05, 0.2) * cv.texture(ys, xs)).clamp(0.5, 1.5)
        # in front of everything it covers (painting order is depth order), with a slight bulge or slant
        under = cv.disp[ys, xs][cov > 0.5]
        d0 = (float(under.max()) if under.numel() else 0.1) + rng.uniform(0.03, 0.12)
        if normals is not None:
            disp = d0 + 0.1 * (r / cv.scale) * normals[2]
        else:
            gx, gy = rng.uniform(-0.05, 0.05, 2) / r
            disp = d0 + gx * (cv.X[ys, xs] - cx) + gy * (cv.Y[ys, xs] - cy)
        cv.paint(ys, xs, cov, a, b, mix, shade, spec, disp)


def procedural_scene(
    size: int | tuple[int, int],
    n_bands: int,
    generator: torch.Generator,
    wavelengths: np.ndarray | None = None,
    return_depth: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """A random natural-looking hyperspectral scene (the embedded default dataset).

    Args:
        size: ``S`` or ``(H, W)``, at least 4.
        n_bands: number of bands ``C`` (any, 1 included).
        generator: the only source of randomness; the same state gives the same scene.
        wavelengths: ``(C,)`` band centres in nm (default: ``C`` bands evenly over 400-700 nm).
        return_depth: also return the scene's depth (painting order is depth order: the background is
            far, each object nearer than what it covers), for :func:`~sschsr.data.synth.pairs.make_pair`.

    Returns:
        ``(C, H, W)`` float32 reflectance-like values in [0, 1]; with ``return_depth``, also ``(H, W)``
        float32 depth in [1, 4] (disparity ``1 / Z`` in [0.25, 1], exact object edges). The scene is the
        same either way.

    Example:
        >>> hsi = procedural_scene(64, 31, torch.Generator().manual_seed(0))
        >>> hsi.shape, bool(hsi.min() >= 0), bool(hsi.max() <= 1)
        (torch.Size([31, 64, 64]), True, True)
    """
    h, w = _hw(size)
    wl = default_wavelengths(n_bands) if wavelengths is None else np.asarray(wavelengths, dtype=np.float64)
    if wl.shape != (n_bands,):
        raise ValueError(f"wavelengths must have shape ({n_bands},), got {wl.shape}")
    rng = numpy_rng(generator)
    n_mat = int(rng.integers(6, 12))
    spectra = torch.from_numpy(random_spectra(wl, n_mat, rng))  # (K, C)
    cv = _Canvas(h, w, n_mat, rng)
    _background(cv, n_mat)
    _objects(cv, n_mat)
    # light falls off across the scene (a window, a lamp) and is dappled (clouds, foliage): real walls and
    # floors are never evenly lit, and that lightness structure is what a photo of them shares with the HSI
    ang = rng.uniform(0, 2 * math.pi)
    ramp = ((cv.X - w / 2) * math.cos(ang) + (cv.Y - h / 2) * math.sin(ang)) / cv.scale  # about -0.7..0.7
    illum = 1.0 - rng.uniform(0.25, 0.55) * (0.5 + ramp.clamp(-0.5, 0.5))
    illum = illum * (1.0 - rng.uniform(0.0, 0.2) * (0.5 + 0.5 * torch.tanh(cv.bank[0])))
    shade = cv.S * illum
    hsi = torch.einsum("kc,khw->chw", spectra, cv.A) * shade + cv.spec * illum
    hsi = hsi.clamp_(0.0, 1.0).contiguous()
    if not return_depth:
        return hsi
    d = cv.disp
    d = 0.25 + 0.75 * (d - d.min()) / (d.max() - d.min() + 1e-6)
    return hsi, (1.0 / d).float()
