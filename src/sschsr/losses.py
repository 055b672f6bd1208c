"""Training losses, as pure functions returning ``(loss, metrics)``.

Stage 1 (flow): :func:`sequence_loss`, RAFT's loss over all recurrent predictions. Stage 2:
:func:`warp_loss`. Full network: :func:`correspondence_nce`, a contrastive loss on the true
correspondences of synthetic pairs for the matching encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sschsr.ops.warp import coords_grid, flow_warp

SEQUENCE_GAMMA = 0.8  # RAFT's sequence-loss decay: later (better) predictions weigh more
MAX_FLOW = 400.0  # RAFT excludes pixels whose true motion exceeds this many pixels (outliers of synthesis)


def flow_valid_mask(flow_gt: Tensor, valid: Tensor | None = None, max_flow: float = MAX_FLOW) -> Tensor:
    """Pixels that supervise a flow: ``valid`` and a true motion of at most ``max_flow`` pixels.

    Args:
        flow_gt: ``(B, 2, H, W)`` pixels.
        valid: ``(B, H, W)`` bool (or 0/1 float); None means everywhere.

    Returns:
        ``(B, H, W)`` bool.
    """
    small = flow_gt.norm(dim=1) <= max_flow
    return small if valid is None else small & (valid > 0.5 if valid.is_floating_point() else valid.bool())


def endpoint_error(flow: Tensor, flow_gt: Tensor) -> Tensor:
    """Euclidean distance between the flows at every pixel, ``(B, 2, H, W) -> (B, H, W)``."""
    return (flow.float() - flow_gt.float()).norm(dim=1)


def flow_metrics(flow: Tensor, flow_gt: Tensor, valid: Tensor) -> dict[str, Tensor]:
    """End-point error and accuracies over the valid pixels (all pooled over the batch).

    Args:
        flow, flow_gt: ``(B, 2, H, W)`` pixels.
        valid: ``(B, H, W)`` bool, already combined with the motion limit (:func:`flow_valid_mask`).

    Returns:
        ``epe`` (mean end-point error, pixels) and ``1px``, ``3px``, ``5px`` (fraction of pixels with an
        end-point error below 1, 3 and 5 pixels), scalar tensors without gradient; all 0 when no pixel
        is valid.
    """
    epe = endpoint_error(flow.detach(), flow_gt)[valid]
    if epe.numel() == 0:
        zero = flow.new_zeros((), dtype=torch.float32)
        return {"epe": zero, "1px": zero, "3px": zero, "5px": zero}
    return {
        "epe": epe.mean(),
        "1px": (epe < 1).float().mean(),
        "3px": (epe < 3).float().mean(),
        "5px": (epe < 5).float().mean(),
    }


def sequence_loss(
    flow_preds: list[Tensor],
    flow_gt: Tensor,
    valid: Tensor | None = None,
    gamma: float = SEQUENCE_GAMMA,
    max_flow: float = MAX_FLOW,
) -> tuple[Tensor, dict[str, Tensor]]:
    """RAFT's sequence loss: ``sum_i gamma^(N - i) * mean_valid |F_i - F_gt|_1`` for ``i = 1..N``.

    ``|.|_1`` sums the absolute x and y errors of a pixel; the mean runs over the valid pixels of the
    whole batch. (The official RAFT code averages over all pixels and both channels, valid or not, which
    scales the loss by half the valid fraction; here an image with few valid pixels weighs the same per
    pixel as any other.)

    Args:
        flow_preds: ``N`` predictions ``(B, 2, H, W)``, first to last.
        flow_gt: ``(B, 2, H, W)`` true flow, pixels.
        valid: ``(B, H, W)`` bool where the true flow is defined (None: everywhere).
        gamma: decay of the weights of earlier predictions.
        max_flow: pixels whose true motion is longer are left out (RAFT: 400).

    Returns:
        ``(loss, metrics)``: the scalar loss, and :func:`flow_metrics` of the last prediction.

    Example:
        >>> gt = torch.zeros(1, 2, 4, 4)
        >>> loss, m = sequence_loss([gt + 1.0, gt + 0.5], gt, gamma=0.5)
        >>> float(loss)  # 0.5 * |1| * 2 + 1 * |0.5| * 2
        2.0
    """
    if not flow_preds:
        raise ValueError("sequence_loss needs at least one prediction")
    mask = flow_valid_mask(flow_gt, valid, max_flow)
    n_valid = mask.sum().clamp_min(1).float()
    n = len(flow_preds)
    loss = flow_preds[0].new_zeros((), dtype=torch.float32)
    for i, pred in enumerate(flow_preds):
        l1 = (pred.float() - flow_gt.float()).abs().sum(dim=1)  # (B, H, W)
        # where, not a product: a NaN in the true flow at an invalid pixel must not reach the loss
        loss = loss + gamma ** (n - 1 - i) * torch.where(mask, l1, 0.0).sum() / n_valid
    return loss, flow_metrics(flow_preds[-1], flow_gt, mask)


def spectral_angle_loss(sr: Tensor, hr: Tensor, eps: float = 1e-6, max_cos: float = 1.0 - 1e-4) -> Tensor:
    """Mean spectral angle between ``sr`` and ``hr`` in radians, differentiable (the SAM metric as a loss).

    ``angle = arccos(<s, h> / (|s| |h| + eps))`` at every pixel, the cosine clipped to ``max_cos`` so that
    the gradient stays finite (``1 / sqrt(1 - max_cos^2)``, about 71 for the default; angles below 0.8
    degrees then get none).

    Args:
        sr, hr: ``(B, C, H, W)``.

    Returns:
        a float32 scalar.

    Example:
        >>> hr = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
        >>> round(float(spectral_angle_loss(torch.tensor([1.0, 1.0]).view(1, 2, 1, 1), hr)), 4)  # pi / 4
        0.7854
    """
    s, h = sr.float(), hr.float()
    cos = (s * h).sum(dim=1) / (s.norm(dim=1) * h.norm(dim=1) + eps)
    return torch.acos(cos.clamp(-max_cos, max_cos)).mean()


def warp_loss(
    ref_warp: Tensor, target: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Stage 2 (WarpNet): ``mean |ref_warp - target|``, the L1 distance to the HR HSI rendered to RGB.

    Args:
        ref_warp: ``(B, 3, H, W)`` the repaired warp of the photo.
        target: ``(B, 3, H, W)`` ``rgb_hr``, the HR HSI seen through the same response and colour match.
        mask: ``(B, H, W)`` bool, pixels that count (None: all; the default, as WarpNet must also repair
            occluded and out-of-view pixels).

    Returns:
        ``(loss, metrics)``: the scalar loss (mean over the counted pixels and the 3 channels), and
        ``l1`` (the same value, without gradient).

    Example:
        >>> loss, m = warp_loss(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5))
        >>> float(loss)
        0.5
    """
    l1 = (ref_warp.float() - target.float()).abs().mean(dim=1)  # (B, H, W)
    if mask is None:
        loss = l1.mean()
    else:
        # where, not a product: a NaN at an excluded pixel must not reach the loss
        loss = torch.where(mask, l1, 0.0).sum() / mask.sum().clamp_min(1)
    return loss, {"l1": loss.detach()}


def correspondence_nce(
    src: Tensor,
    ref: Tensor,
    flow: Tensor,
    valid: Tensor,
    points: int = 256,
    temperature: float = 0.07,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """InfoNCE on true matches: the descriptor of ``src`` at ``p`` must be closer to that of ``ref`` at
    ``p + flow[p]`` than to those of ``ref`` at the other sampled points' matches.

    Per image, up to ``points`` positions are drawn among the valid ones whose match lies inside ``ref``;
    the ``(n, n)`` cosine similarities between their source descriptors and their matches' (sampled
    bilinearly, renormalised), divided by ``temperature``, are scored by cross-entropy against the
    diagonal. The loss is the mean over images with at least two such positions (zero, with gradient
    links kept, when there are none).

    Args:
        src, ref: ``(B, D, h, w)`` descriptors (e.g. :func:`sschsr.models.matching.patch_descriptors`).
        flow: ``(B, 2, h, w)`` the true displacement in pixels of that grid, x then y.
        valid: ``(B, h, w)`` bool, positions whose true match exists (not occluded, in view).
        points: positions drawn per image.
        temperature: of the softmax.
        generator: for the draw (None: torch's global generator).

    Returns:
        ``(loss, metrics)``: the scalar loss, and ``accuracy``: the fraction of drawn positions whose true
        match is their most similar candidate.

    Example:
        >>> d = F.normalize(torch.randn(1, 8, 6, 6), dim=1)
        >>> loss, m = correspondence_nce(d, d, torch.zeros(1, 2, 6, 6), torch.ones(1, 6, 6, dtype=torch.bool))
        >>> float(m["accuracy"])  # identical descriptors, zero motion: every match is found
        1.0
    """
    if src.shape != ref.shape or src.ndim != 4 or flow.shape != (src.shape[0], 2, *src.shape[-2:]):
        raise ValueError(
            f"correspondence_nce expects src, ref (B, D, h, w) and flow (B, 2, h, w); got "
            f"{tuple(src.shape)}, {tuple(ref.shape)}, {tuple(flow.shape)}"
        )
    b, _, h, w = src.shape
    target = coords_grid(b, h, w, device=flow.device, dtype=flow.dtype) + flow
    inside = (target[:, 0] >= 0) & (target[:, 0] <= w - 1) & (target[:, 1] >= 0) & (target[:, 1] <= h - 1)
    usable = valid.bool() & inside & torch.isfinite(flow).all(dim=1)
    matched = F.normalize(flow_warp(ref, torch.nan_to_num(flow)), dim=1)  # ref's descriptor at p + flow[p]
    losses, hits = [], []
    for i in range(b):
        idx = usable[i].flatten().nonzero().squeeze(1)
        if idx.numel() < 2:
            continue
        order = torch.randperm(idx.numel(), generator=generator, device="cpu")[:points].to(idx.device)
        pick = idx[order]
        q = F.normalize(src[i].flatten(1)[:, pick], dim=0)  # (D, n)
        k = matched[i].flatten(1)[:, pick]
        logits = (q.T @ k).float() / temperature  # (n, n): row j's positive is column j
        labels = torch.arange(pick.numel(), device=logits.device)
        losses.append(F.cross_entropy(logits, labels))
        hits.append((logits.argmax(dim=1) == labels).float().mean())
    if not losses:
        zero = (src.sum() + ref.sum()) * 0.0
        return zero, {"accuracy": zero.detach()}
    return torch.stack(losses).mean(), {"accuracy": torch.stack(hits).mean().detach()}
