"""Synthetic training pairs: an HSI, and the unaligned RGB reference another camera would take of it.

``make_pair`` renders the HSI through another camera's spectral response (linear light), moves that
camera (occlusion-aware new view, :mod:`sschsr.data.synth.geometry`), then applies the camera's
processing (:mod:`sschsr.data.synth.photometric`). Because rendering is linear per pixel it commutes with
warping, so the 3 rendered channels are warped instead of the ``C`` bands.

The ground truth is exact: the reference pulled back by the flow (``flow_warp(ref, flow)``) is the
source's view through the other camera, in every valid pixel (up to the bilinear resampling, and the
noise and JPEG of the reference camera).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from torch import Tensor

from sschsr.data.spectral import camera_srf, render
from sschsr.data.synth.geometry import GeometryConfig, random_view
from sschsr.data.synth.photometric import PhotometricConfig, apply_camera, sample_camera
from sschsr.ops.warp import flow_warp


def _coerce(cls, value):
    """Accept a dataclass instance, or a mapping of its fields (Hydra passes DictConfigs)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        names = {f.name for f in fields(cls)}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} settings {sorted(unknown)}; known: {sorted(names)}")
        # ranges arrive as lists from YAML; the dataclasses hold tuples
        return cls(
            **{
                k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
                for k, v in value.items()
            }
        )
    raise TypeError(f"expected {cls.__name__} or a mapping, got {type(value).__name__}")


@dataclass
class SynthConfig:
    """All settings of the synthetic pairs.

    Attributes:
        geometry: motion, depth and occlusion settings (:class:`GeometryConfig`).
        photometric: the reference camera (:class:`PhotometricConfig`).
        identity: shortcut for tests: no motion at all (zero flow, all valid); photometry still applies
            unless ``photometric.enabled`` is False.

    Example:
        >>> SynthConfig(identity=True, photometric={"enabled": False}).photometric.enabled
        False
    """

    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    identity: bool = False

    def __post_init__(self) -> None:
        self.geometry = _coerce(GeometryConfig, self.geometry)
        self.photometric = _coerce(PhotometricConfig, self.photometric)
        if self.identity:
            self.geometry = replace(self.geometry, identity=True)


def make_pair(
    hsi: Tensor,
    wavelengths: np.ndarray,
    generator: torch.Generator,
    cfg: SynthConfig | None = None,
    depth: Tensor | None = None,
) -> dict[str, Tensor]:
    """Make the reference view of ``hsi`` and the ground-truth flow from the source grid to it.

    Args:
        hsi: ``(C, H, W)`` float32 in [0, 1], the source view.
        wavelengths: ``(C,)`` band centres in nm.
        generator: the only source of randomness (same state, same pair).
        cfg: settings.
        depth: ``(H, W)`` depth of the source view, if known (``procedural_scene(..., return_depth=True)``);
            by default one is made up from the image (:func:`~sschsr.data.synth.geometry.procedural_depth`).

    Returns:
        ``ref``: ``(3, H, W)`` float32 in [0, 1], the reference photo (gamma-encoded unless switched off);
        ``flow``: ``(2, H, W)`` float32, source pixel ``p`` appears in ``ref`` at ``p + flow[p]``;
        ``valid``: ``(H, W)`` bool, ``p + flow[p]`` inside ``ref`` and not occluded there.

    Example:
        >>> from sschsr.data.synth.scenes import procedural_scene
        >>> g = torch.Generator().manual_seed(0)
        >>> hsi = procedural_scene(64, 31, g)
        >>> out = make_pair(hsi, np.linspace(400, 700, 31), g)
        >>> out["ref"].shape, out["flow"].shape, out["valid"].dtype
        (torch.Size([3, 64, 64]), torch.Size([2, 64, 64]), torch.bool)
    """
    cfg = cfg if cfg is not None else SynthConfig()
    if hsi.ndim != 3:
        raise ValueError(f"make_pair expects hsi (C, H, W), got {tuple(hsi.shape)}")
    wl = np.asarray(wavelengths, dtype=np.float64)
    if wl.shape != (hsi.shape[0],):
        raise ValueError(f"wavelengths must have shape ({hsi.shape[0]},) for this HSI, got {wl.shape}")
    hsi = hsi.float()
    cam = sample_camera(wl, generator, cfg.photometric)
    linear = render(hsi, torch.from_numpy(cam.srf))  # (3, H, W) the source view through the other camera
    view = random_view(linear.mean(0), generator, cfg.geometry, depth=depth)
    ref = apply_camera(view.render(linear), cam, generator)
    return {"ref": ref.contiguous(), "flow": view.flow.float().contiguous(), "valid": view.valid.contiguous()}


def alignment_stats(
    hsi: Tensor, wavelengths: np.ndarray, ref: Tensor, flow: Tensor, valid: Tensor
) -> dict[str, float]:
    """How well the flow aligns the reference with the source: the acceptance check of ``sschsr-synth``.

    The reference is pulled onto the source grid (``flow_warp(ref, flow)``, bilinear) and its luminance
    compared with the source's over the valid pixels by Spearman rank correlation, with and without the
    warp. Ranks make the comparison blind to exposure and tone curves, not to colour: luminance is
    measured three ways, each pairing the HSI with the reference consistently:

    - ``srgb``: channel mean of the HSI's CIE rendering, sRGB-encoded (gamma 2.2), against the channel
      mean of the reference as stored;
    - ``luma``: Rec. 709 luma of the HSI's linear CIE rendering against the luma of the reference;
    - ``mean``: the HSI's band mean against the reference's channel mean. This one also measures the scene:
      the band mean weighs the ends of the range (400-420, 680-700 nm) that cameras barely see, and the
      mean of gamma-encoded channels ranks saturated colours below greys of equal linear lightness, so on
      very colourful scenes it stays near 0.9 however exact the alignment.

    ``rho_warp`` / ``rho_nowarp`` are the smaller of ``srgb`` and ``luma``.

    Args:
        hsi: ``(C, H, W)`` source; ref: ``(3, H, W)`` in [0, 1]; flow: ``(2, H, W)``; valid: ``(H, W)`` bool.

    Returns:
        ``rho_warp``, ``rho_nowarp``, ``rho_{warp,nowarp}_{srgb,luma,mean}``, ``mean_flow`` (px),
        ``valid_fraction``.
    """
    from scipy.stats import spearmanr

    luma = torch.tensor([0.2126, 0.7152, 0.0722])
    v = valid.numpy().astype(bool)
    cie = render(hsi.float(), torch.from_numpy(camera_srf(np.asarray(wavelengths, dtype=np.float64)))).clamp(
        0, 1
    )
    src = {
        "srgb": cie.pow(1 / 2.2).mean(0),
        "luma": torch.einsum("c,chw->hw", luma, cie),
        "mean": hsi.float().mean(0),
    }
    warped = flow_warp(ref[None].float(), flow[None].float())[0]

    def rho(img: Tensor, kind: str) -> float:
        if v.sum() < 3:
            return float("nan")
        lum = torch.einsum("c,chw->hw", luma, img) if kind == "luma" else img.mean(0)
        return float(spearmanr(lum.numpy()[v], src[kind].numpy()[v])[0])

    out = {f"rho_{w}_{k}": rho(img, k) for w, img in (("warp", warped), ("nowarp", ref.float())) for k in src}
    return {
        "rho_warp": min(out["rho_warp_srgb"], out["rho_warp_luma"]),
        "rho_nowarp": min(out["rho_nowarp_srgb"], out["rho_nowarp_luma"]),
        **out,
        "mean_flow": float(torch.hypot(flow[0], flow[1]).mean()),
        "valid_fraction": float(v.mean()),
    }
