"""Occlusion-aware new views of an image: procedural depth, a moving pinhole camera, z-buffering.

The reference camera sees the source scene from elsewhere. For a source pixel ``p`` with depth ``Z(p)``
the chain to the reference image is

    X  = Z(p) K^-1 [p; 1]                  back-projection into the source camera's frame
    X' = R X + t                           the reference camera's frame (small rotation, translation)
    r  = pi(G K X')                        projection, then a homography G in the image plane
    F(p) = r + e(r)                        a smooth elastic displacement ``e`` on top (lens, rolling shutter)

``F(p) - p`` is the forward flow. Occlusions are real: every source point is splatted into the
reference grid with its depth ``Z' = X'_z`` and the nearest surface wins (``scatter_reduce`` with
``amin``, over the 2 x 2 pixels around ``F(p)`` so that no cracks open where the view stretches). A
source pixel is *valid* if ``F(p)`` lies inside the reference and its own depth is (within a tolerance)
the nearest one splatted to the pixel it lands on.

To render the reference, every reference pixel ``q`` needs the source point it sees: the splatted depth
``Z'(q)`` (holes, where the reference sees what the source does not, are filled with the farthest
neighbouring depth, i.e. background) is back-projected through the inverse chain
``q -> e^-1 -> G^-1 -> K^-1, Z' -> R^T (X' - t) -> K``, which gives the backward map ``B(q)``; the source
image is sampled there bilinearly. ``e^-1`` is found by fixed-point iteration ``r = q - e(r)``, which
converges because the field is smooth (its Jacobian is far below 1). For every visible ``p``,
``B(F(p)) = p`` up to the interpolation of depth, so forward flow and rendering agree.

Depth follows the image: layers come from thresholding a smoothed luminance at random quantiles (so depth
steps, hence occlusions, sit on object edges), on a tilted plane plus a smooth random field, expressed as
disparity ``1 / Z``.

Motion is drawn as a random direction in parameter space and then scaled so that the mean flow magnitude
hits a target drawn from ``GeometryConfig.flow_range``; when too little of the source stays valid the
motion shrinks until at least ``min_valid`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sschsr.data.synth.filters import _argmax0, _blur, guided_filter
from sschsr.data.synth.scenes import fbm, numpy_rng
from sschsr.ops.warp import flow_warp


@dataclass
class GeometryConfig:
    """Settings of the random new view.

    Attributes:
        identity: no motion at all: zero flow, everything valid, the reference is the source.
        flow_range: target mean ``|flow|`` in pixels, drawn uniformly (the flow model's regime is 5-15 px
            of misalignment; occlusions and shrinking to keep ``min_valid`` bring the mean down a bit).
        camera: 3-D camera motion with parallax (rotation and translation).
        homography: an extra plane-to-plane warp (small perspective and shear).
        elastic: an extra smooth displacement field.
        translation_weight: relative share of translation (parallax, occlusions) in the camera motion.
        rotation_weight, homography_weight, elastic_weight: relative shares of the other components.
        focal_range: focal length over the image's longer side (0.7 is a wide lens, 1.5 a normal one).
        depth_layers: how many depth steps (thresholds of the luminance) to draw from, inclusive range.
        disparity_range: nearest and farthest disparity ``1 / Z`` (the camera has unit distance scale).
        layer_step: range of disparity jumps between layers, as a fraction of the disparity range.
        min_valid: smallest acceptable valid fraction; the motion shrinks until it is met.
        occlusion_tol: relative depth tolerance of the z-buffer test (neighbours on one tilted surface
            splat slightly different depths; a real occluder is much nearer).
        elastic_cells: coarseness of the elastic field (control points along the longer side).
        elastic_iters: fixed-point iterations for inverting it.
    """

    identity: bool = False
    flow_range: tuple[float, float] = (5.0, 12.0)
    camera: bool = True
    homography: bool = True
    elastic: bool = True
    translation_weight: tuple[float, float] = (0.5, 1.5)
    rotation_weight: tuple[float, float] = (0.0, 1.0)
    homography_weight: tuple[float, float] = (0.0, 0.4)
    elastic_weight: tuple[float, float] = (0.05, 0.2)
    focal_range: tuple[float, float] = (0.7, 1.5)
    depth_layers: tuple[int, int] = (1, 3)
    disparity_range: tuple[float, float] = (0.25, 1.0)
    layer_step: tuple[float, float] = (0.15, 0.5)
    min_valid: float = 0.5
    occlusion_tol: float = 0.03
    elastic_cells: int = 4
    elastic_iters: int = 6


@dataclass
class Motion:
    """A camera motion and the image-plane warps composed on it (all in pixels of the reference).

    Attributes:
        K: ``(3, 3)`` intrinsics (shared by both cameras).
        R: ``(3, 3)`` rotation source -> reference frame; t: ``(3,)`` translation.
        G: ``(3, 3)`` homography applied after projection.
        elastic: ``(2, H, W)`` displacement ``e`` on the reference grid, or None.
    """

    K: Tensor
    R: Tensor
    t: Tensor
    G: Tensor
    elastic: Tensor | None = None

    @staticmethod
    def identity(height: int, width: int, focal: float | None = None) -> Motion:
        return Motion(intrinsics(height, width, focal), torch.eye(3), torch.zeros(3), torch.eye(3), None)


@dataclass
class View:
    """A synthesised view.

    Attributes:
        flow: ``(2, H, W)`` float32 forward flow, source grid -> reference (x then y, pixels).
        valid: ``(H, W)`` bool: ``p + flow`` inside the reference and ``p`` not occluded there.
        backward: ``(2, H, W)`` float32 backward map: reference pixel ``q`` shows source point
            ``q + backward[q]``; ``render`` samples with it.
        depth: ``(H, W)`` source depth ``Z``; ref_depth: ``(H, W)`` z-buffer on the reference grid
            (``inf`` where nothing landed); motion: the parameters used.
    """

    flow: Tensor
    valid: Tensor
    backward: Tensor
    depth: Tensor
    ref_depth: Tensor
    motion: Motion

    def render(self, image: Tensor) -> Tensor:
        """The reference view of ``image`` (``(C, H, W)`` on the source grid) -> ``(C, H, W)``.

        Outside the source's field of view the image is mirrored at its border (plausible content that no
        valid source pixel corresponds to).
        """
        return flow_warp(image[None], self.backward[None].to(image.dtype), padding_mode="reflection")[0]


def intrinsics(height: int, width: int, focal: float | None = None) -> Tensor:
    """Pinhole intrinsics with the principal point at the image centre (pixel centres at integers)."""
    f = float(max(height, width)) if focal is None else float(focal)
    return torch.tensor([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def rotation(omega: Tensor) -> Tensor:
    """Rodrigues: the rotation by angle ``|omega|`` about ``omega`` (a ``(3,)`` axis-angle vector)."""
    omega = omega.to(torch.float64)
    theta = float(omega.norm())
    if theta < 1e-12:
        return torch.eye(3)
    k = omega / theta
    Kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    R = torch.eye(3, dtype=torch.float64) + math.sin(theta) * Kx + (1 - math.cos(theta)) * Kx @ Kx
    return R.float()


def homography_from_corners(height: int, width: int, offsets: Tensor) -> Tensor:
    """The homography moving the four corner pixels by ``offsets`` (``(4, 2)`` px: TL, TR, BR, BL).

    Solved by the direct linear transform in float64.
    """
    src = torch.tensor(
        [[0.0, 0.0], [width - 1.0, 0.0], [width - 1.0, height - 1.0], [0.0, height - 1.0]],
        dtype=torch.float64,
    )
    dst = src + offsets.to(torch.float64)
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src.tolist(), dst.tolist(), strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    h = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64))
    return torch.cat([h, torch.ones(1, dtype=torch.float64)]).reshape(3, 3).float()


def apply_homography(G: Tensor, pts: Tensor) -> Tensor:
    """``pts``: ``(2, ...)`` x then y -> ``(2, ...)`` mapped by ``G`` (projective division)."""
    x, y = pts[0], pts[1]
    den = G[2, 0] * x + G[2, 1] * y + G[2, 2]
    return torch.stack(
        [(G[0, 0] * x + G[0, 1] * y + G[0, 2]) / den, (G[1, 0] * x + G[1, 1] * y + G[1, 2]) / den]
    )


def sample_field(field: Tensor, pos: Tensor) -> Tensor:
    """Bilinear sample of ``field`` ``(C, H, W)`` at absolute positions ``pos`` ``(2, H', W')``, border-clamped."""
    h, w = field.shape[-2:]
    grid = torch.stack([2 * pos[0] / max(w - 1, 1) - 1, 2 * pos[1] / max(h - 1, 1) - 1], dim=-1)[None]
    return F.grid_sample(field[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def invert_displacement(e: Tensor, iters: int = 8) -> Tensor:
    """The inverse of the map ``r -> r + e(r)``: ``einv`` with ``q + einv(q) + e(q + einv(q)) = q``.

    Fixed-point iteration ``einv <- -e(q + einv)``; the error shrinks by the field's Lipschitz constant
    (its largest Jacobian norm) per step, so smooth fields of a few pixels converge in a handful.

    Args:
        e: ``(2, H, W)`` displacement in pixels on its own grid.

    Returns:
        ``(2, H, W)``.
    """
    h, w = e.shape[-2:]
    grid = _grid(h, w)
    einv = -e
    for _ in range(iters):
        einv = -sample_field(e, grid + einv)
    return einv


def _grid(h: int, w: int) -> Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([xs, ys])


def project(depth: Tensor, motion: Motion) -> tuple[Tensor, Tensor]:
    """Where every source pixel lands in the reference, and at what depth.

    Args:
        depth: ``(H, W)`` source depth ``Z > 0``.

    Returns:
        ``pos``: ``(2, H, W)`` absolute reference coordinates ``F(p)``; ``z``: ``(H, W)`` depth ``Z'`` in
        the reference camera.
    """
    h, w = depth.shape
    pix = _grid(h, w)
    Kinv = torch.linalg.inv(motion.K)
    rays = torch.einsum("ij,jhw->ihw", Kinv[:, :2], pix) + Kinv[:, 2, None, None]  # (3, H, W), z = 1
    # homogeneous reference coordinates: G K (R Z rays + t) = Z (G K R) rays + G K t
    M, m = motion.G @ motion.K @ motion.R, motion.G @ motion.K @ motion.t
    ph = depth[None] * torch.einsum("ij,jhw->ihw", M, rays) + m[:, None, None]
    z = depth * torch.einsum("j,jhw->hw", motion.R[2], rays) + motion.t[2]
    pos = ph[:2] / ph[2:3]
    if motion.elastic is not None:
        pos = pos + sample_field(motion.elastic, pos)
    return pos, z


def splat_depth(pos: Tensor, z: Tensor, height: int, width: int) -> Tensor:
    """Z-buffer: the nearest depth landing on each reference pixel (2 x 2 footprint around ``pos``).

    Returns:
        ``(H, W)``, ``inf`` where nothing landed.
    """
    n = height * width
    x0, y0 = pos[0].floor().long(), pos[1].floor().long()
    zf = z.flatten()
    buf = torch.full((n + 1,), float("inf"))  # the last cell takes everything that falls outside
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        x, y = x0 + dx, y0 + dy
        ok = (x >= 0) & (x < width) & (y >= 0) & (y < height) & (z > 0)
        idx = torch.where(ok, y * width + x, n).flatten()
        buf.scatter_reduce_(0, idx, zf, reduce="amin", include_self=True)
    return buf[:n].view(height, width)


def fill_far(zbuf: Tensor) -> Tensor:
    """Fill the ``inf`` holes of a z-buffer with the farthest depth nearby (push-pull on a max pyramid).

    Holes are where the reference sees what the source does not: disocclusions behind a foreground edge
    and the margins outside the source's field of view; both show background, hence the farthest depth.
    """
    hole = ~torch.isfinite(zbuf)
    if not hole.any():
        return zbuf
    if hole.all():
        return torch.ones_like(zbuf)
    levels = [torch.where(hole, torch.tensor(-float("inf")), zbuf)[None, None]]
    while bool((levels[-1] == -float("inf")).any()) and min(levels[-1].shape[-2:]) > 1:
        levels.append(F.max_pool2d(levels[-1], 2, ceil_mode=True))
    for k in range(len(levels) - 2, -1, -1):
        fine, coarse = levels[k], levels[k + 1]
        up = coarse.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[
            ..., : fine.shape[-2], : fine.shape[-1]
        ]
        levels[k] = torch.where(fine == -float("inf"), up, fine)
    out = levels[0][0, 0]
    # a coarsest level of one pixel may still be -inf if a whole side was empty; never the case here
    return torch.where(torch.isfinite(out), out, zbuf[~hole].max())


def pull_far(zbuf: Tensor, values: Tensor) -> Tensor:
    """Fill ``values`` ``(N, H, W)`` at the holes of ``zbuf`` with those of the farthest pixel nearby.

    Push-pull on a pyramid: each level keeps, per 2 x 2 block, the values of its farthest non-hole pixel
    (max pooling of depth with its indices); a hole takes the values of the smallest enclosing block that
    has any.
    """
    hole = ~torch.isfinite(zbuf)
    if not hole.any() or hole.all():
        return values
    z = torch.where(hole, torch.tensor(-float("inf")), zbuf)
    levels = [(z, values)]
    while bool((z == -float("inf")).any()) and min(z.shape) > 1:
        pooled, idx = F.max_pool2d(z[None, None], 2, ceil_mode=True, return_indices=True)
        n = values.shape[0]
        values = values.flatten(1)[:, idx.flatten()].view(n, *pooled.shape[-2:])
        z = pooled[0, 0]
        levels.append((z, values))
    z, values = levels[-1]
    for zf, vf in reversed(levels[:-1]):
        up = values.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[
            ..., : zf.shape[0], : zf.shape[1]
        ]
        values = torch.where((zf == -float("inf"))[None], up, vf)
    return values


def backproject(ref_depth: Tensor, motion: Motion, elastic_iters: int = 6) -> Tensor:
    """For every reference pixel ``q`` with depth ``Z'(q)``, the source position it shows.

    Returns:
        ``(2, H, W)`` absolute source coordinates ``B(q)``.
    """
    h, w = ref_depth.shape
    q = _grid(h, w)
    r = q + invert_displacement(motion.elastic, elastic_iters) if motion.elastic is not None else q
    u = apply_homography(torch.linalg.inv(motion.G), r)
    Kinv = torch.linalg.inv(motion.K)
    rays = torch.einsum("ij,jhw->ihw", Kinv[:, :2], u) + Kinv[:, 2, None, None]  # z = 1
    X = torch.einsum(
        "ji,jhw->ihw", motion.R, ref_depth[None] * rays - motion.t[:, None, None]
    )  # R^T (X' - t)
    ph = torch.einsum("ij,jhw->ihw", motion.K, X)
    return ph[:2] / ph[2:3].clamp(min=1e-6)


def synthesize_view(
    depth: Tensor, motion: Motion, occlusion_tol: float = 0.03, elastic_iters: int = 6
) -> View:
    """The new view for a given depth and motion (deterministic; see the module docstring).

    Args:
        depth: ``(H, W)`` float32 source depth, positive.
        motion: camera motion and image-plane warps.
        occlusion_tol: relative depth tolerance of the z-buffer test.
        elastic_iters: fixed-point iterations inverting the elastic field.

    Returns:
        A :class:`View`.
    """
    h, w = depth.shape
    pos, z = project(depth, motion)
    zbuf = splat_depth(pos, z, h, w)
    xi, yi = pos[0].round().long(), pos[1].round().long()
    inside = (pos[0] >= 0) & (pos[0] <= w - 1) & (pos[1] >= 0) & (pos[1] <= h - 1) & (z > 0)
    nearest = zbuf[yi.clamp(0, h - 1), xi.clamp(0, w - 1)]
    valid = inside & (z <= nearest * (1 + occlusion_tol))
    hole = ~torch.isfinite(zbuf)
    src_pos = backproject(fill_far(zbuf), motion, elastic_iters)
    if hole.any():
        # a hole whose back-projection lands inside the source is a disocclusion: background the source
        # does not see (its far depth back-projects onto the occluder). Show the nearest visible
        # background there, smeared, rather than a copy of the occluder's edge. Holes outside the source's
        # field of view keep their back-projection (rendered with mirrored content).
        in_src = (src_pos[0] >= 0) & (src_pos[0] <= w - 1) & (src_pos[1] >= 0) & (src_pos[1] <= h - 1)
        smear = pull_far(zbuf, src_pos)
        src_pos = torch.where((hole & in_src)[None], smear, src_pos)
    backward = src_pos - _grid(h, w)
    return View(
        flow=pos - _grid(h, w), valid=valid, backward=backward, depth=depth, ref_depth=zbuf, motion=motion
    )


def identity_view(height: int, width: int) -> View:
    """No motion: zero flow, all valid, the reference is the source."""
    zero = torch.zeros(2, height, width)
    ones = torch.ones(height, width)
    return View(
        flow=zero,
        valid=torch.ones(height, width, dtype=torch.bool),
        backward=zero.clone(),
        depth=ones,
        ref_depth=ones.clone(),
        motion=Motion.identity(height, width),
    )


def procedural_depth(guide: Tensor, generator: torch.Generator, cfg: GeometryConfig | None = None) -> Tensor:
    """A plausible depth map for an image: layers on its structure, a tilted plane, smooth relief.

    Layers are the image's luminance, blurred past fine texture, thresholded at random quantiles, then
    snapped onto the image's edges by a guided filter, so depth steps (and the occlusions they cause)
    fall on object boundaries; each layer gets its own random disparity offset (bright is not always
    near).

    Args:
        guide: ``(H, W)`` luminance of the source view.

    Returns:
        ``(H, W)`` float32 depth ``Z`` in ``[1 / disparity_range[1], 1 / disparity_range[0]]``.
    """
    cfg = cfg if cfg is not None else GeometryConfig()
    rng = numpy_rng(generator)
    h, w = guide.shape
    d_lo, d_hi = cfg.disparity_range
    span = d_hi - d_lo
    yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, h), torch.linspace(-0.5, 0.5, w), indexing="ij")
    # a receding plane (ground below, farther at the top) with a random tilt
    disp = rng.uniform(0.1, 0.4) * span * (yy * rng.uniform(0.2, 1.0) + xx * rng.uniform(-0.4, 0.4))
    disp = disp + rng.uniform(0.02, 0.1) * span * fbm(h, w, rng, octaves=3, base_cells=2)
    n_thr = int(rng.integers(cfg.depth_layers[0], cfg.depth_layers[1] + 1))
    if n_thr > 0:
        g = guide.float()
        g = (g - g.min()) / (g.max() - g.min() + 1e-6)
        # coarse layers from the luminance blurred past fine texture (stripes, grain), so that a textured
        # object stays one layer; then snapped back onto the image's edges by a guided filter
        smooth = _blur(g, sigma=max(1.0, 0.015 * max(h, w)))
        sub = smooth.flatten()[:: max(1, smooth.numel() // 4096)]
        qs = np.sort(rng.uniform(0.15, 0.85, n_thr))
        thr = torch.quantile(sub, torch.tensor(qs, dtype=sub.dtype))
        labels = torch.bucketize(smooth, thr)  # 0..n_thr
        onehot = F.one_hot(labels, n_thr + 1).permute(2, 0, 1).float()
        labels = _argmax0(guided_filter(g, onehot, radius=max(2, round(0.025 * max(h, w))), eps=2e-3))
        offsets = torch.from_numpy(np.cumsum(rng.uniform(*cfg.layer_step, n_thr + 1)) * span).float()
        offsets = offsets[torch.from_numpy(rng.permutation(n_thr + 1))]
        disp = disp + offsets[labels]
    # map into the disparity range, keeping the relative structure
    disp = d_lo + span * (disp - disp.min()) / (disp.max() - disp.min() + 1e-6)
    return (1.0 / disp).float()


@dataclass
class _Draw:
    omega: Tensor  # (3,) rotation axis-angle per unit scale
    t: Tensor  # (3,) translation per unit scale
    corners: Tensor  # (4, 2) homography corner offsets per unit scale
    elastic: Tensor | None  # (2, H, W) per unit scale
    elastic_slope: float = 0.0  # the unit field's largest finite difference, px per px


def _draw(
    h: int, w: int, K: Tensor, mean_disp: float, rng: np.random.Generator, cfg: GeometryConfig
) -> _Draw:
    """A random motion direction, each component normalised to about 1 px of mean flow per unit scale."""
    f = float(K[0, 0])
    radius = 0.38 * max(h, w)  # mean distance of a pixel from the centre, roughly

    def unit(n: int) -> np.ndarray:
        v = rng.standard_normal(n)
        return v / (np.linalg.norm(v) + 1e-12)

    omega = torch.zeros(3)
    t = torch.zeros(3)
    corners = torch.zeros(4, 2)
    elastic = None
    if cfg.camera:
        wr, wt = rng.uniform(*cfg.rotation_weight), rng.uniform(*cfg.translation_weight)
        # pan/tilt move everything by f * angle; roll by radius * angle
        pan = unit(2) * wr / f
        roll = rng.uniform(-0.3, 0.3) * wr / radius
        omega = torch.tensor([pan[1], pan[0], roll], dtype=torch.float32)  # rot about y pans along x
        # lateral translation moves a point at disparity d by f t d; forward motion by radius tz d
        lat = unit(2) * wt / (f * mean_disp)
        tz = rng.uniform(-0.3, 0.3) * wt / (radius * mean_disp)
        t = torch.tensor([lat[0], lat[1], tz], dtype=torch.float32)
    if cfg.homography:
        corners = torch.from_numpy(rng.standard_normal((4, 2)).astype(np.float32)) * rng.uniform(
            *cfg.homography_weight
        )
    if cfg.elastic:
        cells = max(2, cfg.elastic_cells)
        e = torch.stack([fbm(h, w, rng, octaves=2, base_cells=cells) for _ in range(2)])
        elastic = e * rng.uniform(*cfg.elastic_weight)
        slope = max(float(elastic.diff(dim=-1).abs().max()), float(elastic.diff(dim=-2).abs().max()))
        return _Draw(omega, t, corners, elastic, slope)
    return _Draw(omega, t, corners, elastic)


MAX_ELASTIC_SLOPE = (
    0.2  # keeps r -> r + e(r) one-to-one and its fixed-point inverse fast (error * 0.2 per step)
)


def _motion_at(draw: _Draw, scale: float, K: Tensor, h: int, w: int) -> Motion:
    G = homography_from_corners(h, w, draw.corners * scale) if bool(draw.corners.any()) else torch.eye(3)
    elastic = None
    if draw.elastic is not None:
        elastic = draw.elastic * min(scale, MAX_ELASTIC_SLOPE / max(draw.elastic_slope, 1e-9))
    return Motion(K=K, R=rotation(draw.omega * scale), t=draw.t * scale, G=G, elastic=elastic)


def random_view(
    guide: Tensor, generator: torch.Generator, cfg: GeometryConfig | None = None, depth: Tensor | None = None
) -> View:
    """A random new view of an image, with the mean flow magnitude in ``cfg.flow_range``.

    Args:
        guide: ``(H, W)`` luminance of the source view (shapes the depth layers).
        generator: the only source of randomness.
        cfg: settings.
        depth: ``(H, W)`` depth to use instead of :func:`procedural_depth`.

    Returns:
        A :class:`View` with ``valid.mean() >= cfg.min_valid``.
    """
    cfg = cfg if cfg is not None else GeometryConfig()
    h, w = guide.shape
    if cfg.identity or not (cfg.camera or cfg.homography or cfg.elastic):
        return identity_view(h, w)
    if not cfg.camera:  # image-plane warps only: depth plays no part, and nothing can occlude
        depth = torch.ones(h, w)
    elif depth is None:
        depth = procedural_depth(guide, generator, cfg)
    rng = numpy_rng(generator)
    K = intrinsics(h, w, rng.uniform(*cfg.focal_range) * max(h, w))
    target = float(rng.uniform(*cfg.flow_range))
    draw = _draw(h, w, K, float((1.0 / depth).mean()), rng, cfg)

    def mean_flow(s: float) -> float:
        pos, _ = project(depth, _motion_at(draw, s, K, h, w))
        d = pos - _grid(h, w)
        return float(torch.hypot(d[0], d[1]).mean())

    # flow is nearly linear in the motion's scale for small motions: two secant steps land on the target
    scale = target
    for _ in range(2):
        m = mean_flow(scale)
        if m < 1e-6:
            break
        scale *= target / m
    view = synthesize_view(depth, _motion_at(draw, scale, K, h, w), cfg.occlusion_tol, cfg.elastic_iters)
    for _ in range(12):
        if float(view.valid.float().mean()) >= cfg.min_valid:
            return view
        scale *= 0.75
        view = synthesize_view(depth, _motion_at(draw, scale, K, h, w), cfg.occlusion_tol, cfg.elastic_iters)
    return view if float(view.valid.float().mean()) >= cfg.min_valid else identity_view(h, w)
