"""The test-time pipeline: the steps around a trained network that ``sschsr-predict``, ``sschsr-eval``, the demo
and the experiment scripts run, with their defaults in one place (:class:`TestTime`).

From the inside out (:meth:`TestTime.build`):

1. :func:`with_coarse_flow`: the flow network runs on the pair shrunk by ``flow_factor`` (auto: 2 for pairs
   of at least 512 px a side);
2. :func:`with_flow_refinement`: the flow refined against the LR side by ``flow_refine`` steps, with the
   LR data's PSF (``psf``) on its grid (``lr_grid``);
3. :func:`with_tta`: the self-ensemble over ``tta`` flips and transpositions;
4. :func:`with_back_projection`: the ensemble's mean made to agree with the LR input by ``back_project``
   conjugate-gradient steps under that PSF;
5. :func:`on_lr_grid`: inputs moved from the data's grid onto the paper's, on which every network learnt.

    >>> from sschsr.pipeline import TestTime
    >>> model = TestTime(tta=1).build(net, scale=4)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from sschsr.errors import InputError
from sschsr.models.ensemble import TRANSFORMS, BackProjected, SelfEnsemble, ShiftedInputs
from sschsr.ops.back_projection import CORRECTION_STD
from sschsr.ops.coarse_flow import CoarseFlow
from sschsr.ops.degradations import Psf
from sschsr.ops.degradations import grid_phase as _grid_phase
from sschsr.ops.degrade import LR_GRIDS, content_shift, lr_grid_shift
from sschsr.ops.flow_refine import refiner_for

# the self-ensemble of sschsr-predict and sschsr-eval: four passes (the input, its transposition and its two
# mirror images), chosen over all eight on the validation scenes (docs/measured.md)
DEFAULT_TTA = 4


def with_tta(net: nn.Module, scale: int, tta: int = DEFAULT_TTA) -> nn.Module:
    """``net`` run on ``tta`` (1, 2, 4 or 8) flips/transpositions of its inputs, outputs mapped back and
    averaged (:class:`sschsr.models.ensemble.SelfEnsemble`, corrected for the content shift of ``lr_up``
    at ``scale``). ``tta=1`` and networks without weights (bicubic, whose ensemble would only change its
    borders) are returned as they are.

    Raises:
        InputError: ``tta`` not 1, 2, 4 or 8.
    """
    if tta not in TRANSFORMS:
        raise InputError(f"tta must be one of {sorted(TRANSFORMS)}; got {tta}")
    if tta == 1 or next(net.parameters(), None) is None:
        return net
    return SelfEnsemble(net, tta, content_shift(scale))


DEFAULT_FLOW_REFINE = 150  # steps of the flow's test-time refinement in sschsr-predict and sschsr-eval


def check_steps(steps: int, given: str | None = None) -> None:
    """Raise :class:`InputError` unless ``steps`` (of the flow refinement, of back-projection) is a count
    (>= 0); the message starts with ``given``, how the user wrote it (e.g. ``--flow-refine -1``)."""
    if steps < 0:
        raise InputError(f"{given or f'steps {steps}'}: the number of steps must be >= 0")


def grid_phase(scale: int, lr_grid: str) -> float:
    """:func:`sschsr.ops.degradations.grid_phase`, an unknown grid an :class:`InputError`."""
    try:
        return _grid_phase(scale, lr_grid)
    except ValueError as e:
        raise InputError(str(e)) from None


PSF_CHOICES = "auto | auto-reference | paper | block | SIGMA | FILE.json"


def parse_psf(text: str | None, scale: int) -> Psf | str | None:
    """The PSF a user states (``--psf``): ``auto`` (estimated from the data: by the flow refinement from
    the reference, by back-projection from the network's output), ``auto-reference`` (back-projection
    takes the refinement's estimate), ``paper`` (the paper's
    kernel; None), ``block`` (block means at ``scale``), a number (a Gaussian of that std, HR px), or a
    JSON file of :class:`~sschsr.ops.degradations.Psf` fields (``{"sigma": 2.5, "area": 8}``).

    Raises:
        InputError: anything else, or a file that does not hold PSF fields.
    """
    if text is None or text == "paper":
        return None
    if text in ("auto", "auto-reference"):
        return text
    if text == "block":
        return Psf(sigma=0.0, area=float(scale))
    try:
        return Psf(sigma=float(text))
    except ValueError:
        pass
    path = Path(text)
    if not path.is_file():
        raise InputError(f"--psf {text}: expected {PSF_CHOICES} (no such file)")
    try:
        fields = json.loads(path.read_text())
        psf = Psf(**{k: float(v) for k, v in fields.items() if k in ("sigma", "sigma_y", "area")})
        if set(fields) - {"sigma", "sigma_y", "area"}:
            raise ValueError(f"unknown fields {sorted(set(fields) - {'sigma', 'sigma_y', 'area'})}")
    except (ValueError, TypeError, AttributeError) as e:
        raise InputError(
            f'--psf {text}: not a PSF file ({e}); expected JSON like {{"sigma": 2.5, "area": 8}}'
        ) from None
    return psf


def with_flow_refinement(
    net: nn.Module,
    scale: int,
    iters: int = DEFAULT_FLOW_REFINE,
    settings: dict[str, object] | None = None,
    psf: Psf | str | None = None,
    lr_grid: str = "paper",
) -> nn.Module:
    """``net`` with its flow refined at test time by ``iters`` steps of
    :class:`sschsr.ops.flow_refine.FlowRefiner` for LR data degraded at ``scale`` (0: the flow network's
    flow as it is), its other fields from ``settings`` where given (:meth:`FlowRefiner.from_settings`; the
    defaults otherwise). Sets ``net.flow_refiner`` on a network that estimates a flow and returns ``net``;
    networks without one (bicubic, single-image) are returned untouched. Apply it to the loaded network,
    before :func:`with_tta` and :func:`on_lr_grid` (which present the data as the refinement expects).
    ``psf``: the LR data's PSF (:func:`parse_psf`; None: the paper's, ``"auto"``: estimated per image) on
    the grid ``lr_grid`` (:class:`~sschsr.ops.flow_refine.FlowRefiner`'s ``psf`` and ``phase``).

    Raises:
        InputError: ``iters`` negative.
    """
    check_steps(iters)
    if getattr(net, "flow_net", None) is not None and hasattr(net, "flow_refiner"):
        refiner = refiner_for(scale, iters, settings)
        if refiner is not None and psf is not None:
            told = "auto" if psf == "auto-reference" else psf  # the refinement estimates from the reference
            refiner = dataclasses.replace(refiner, psf=told, phase=grid_phase(scale, lr_grid))
        net.flow_refiner = refiner
    return net


def check_flow_factor(factor: int, given: str | None = None) -> None:
    """Raise :class:`InputError` unless ``factor`` (the flow's shrink factor) is at least 1; the message
    starts with ``given``, how the user wrote it (e.g. ``--flow-factor 0``)."""
    if factor < 1:
        raise InputError(f"{given or f'flow factor {factor}'}: the flow's shrink factor must be >= 1")


def with_coarse_flow(net: nn.Module, scale: int, factor: int | None = None) -> nn.Module:
    """``net`` with its flow network run at test time on the pair shrunk by ``factor``
    (:class:`sschsr.ops.coarse_flow.CoarseFlow`, corrected for the content shift of ``rgb_hsi`` at
    ``scale``; None: :func:`~sschsr.ops.coarse_flow.auto_factor` of each pair, the default of
    ``sschsr-predict`` and ``sschsr-eval``; 1: the pair as it is). Sets ``net.coarse_flow`` on a network that
    estimates a flow and returns ``net``; networks without one are returned untouched. Apply it to the loaded
    network, before :func:`with_tta`.

    Raises:
        InputError: ``factor`` below 1.
    """
    if factor is not None:
        check_flow_factor(factor)
    if getattr(net, "flow_net", None) is not None and hasattr(net, "coarse_flow"):
        net.coarse_flow = None if factor == 1 else CoarseFlow(factor, content_shift(scale))
    return net


# conjugate-gradient steps of back-projection in sschsr-predict and sschsr-eval unless told otherwise, at
# every scale: the correction is damped by the noise it estimates in the LR data
# (sschsr.ops.back_projection.back_project; docs/usage.md, "Back-projection")
BACK_PROJECT_STEPS = 20


def with_back_projection(
    net: nn.Module,
    scale: int,
    iters: int,
    correction_std: float | None = CORRECTION_STD,
    psf: Psf | str | None = None,
    lr_grid: str = "paper",
) -> nn.Module:
    """``net`` with its ``sr`` back-projected onto its LR input by ``iters`` steps
    (:func:`sschsr.ops.back_projection.back_project` for LR data degraded at ``scale``;
    :class:`~sschsr.models.ensemble.BackProjected`); ``net`` itself for 0 and for networks without weights
    (bicubic stays bicubic, as in :func:`with_tta`). Apply it outside :func:`with_tta`
    (once, on the ensemble's mean) and inside :func:`on_lr_grid` (which presents the data as the degradation
    model expects). ``correction_std``: as ``back_project``'s (None: the exact fit, not told the noise).
    ``psf``: the LR data's PSF on the grid ``lr_grid`` (:func:`parse_psf`; None: the paper's; ``"auto"``:
    estimated per image from the network's output, :class:`~sschsr.models.ensemble.BackProjected`).

    Raises:
        InputError: ``iters`` negative.
    """
    check_steps(iters)
    return (
        BackProjected(net, scale, iters, correction_std, psf, grid_phase(scale, lr_grid))
        if iters and next(net.parameters(), None) is not None
        else net
    )


def on_lr_grid(net: nn.Module, scale: int, lr_grid: str = "paper") -> nn.Module:
    """``net`` (trained on the paper's degradation, as every network here) for LR data of ``lr_grid``
    (:data:`sschsr.ops.degrade.LR_GRIDS`): ``lr_up`` and ``rgb_hsi`` moved by the difference of the two
    conventions' :func:`~sschsr.ops.degrade.lr_grid_shift` (:class:`~sschsr.models.ensemble.ShiftedInputs`,
    3 px at x8 for ``block`` data); ``net`` itself for ``paper`` data. Apply it outside :func:`with_tta` and
    :func:`with_back_projection`.

    Raises:
        InputError: an unknown ``lr_grid``.
    """
    try:
        shift = lr_grid_shift(scale, "paper") - lr_grid_shift(scale, lr_grid)
    except ValueError as e:  # an unknown grid: the user's input
        raise InputError(str(e)) from None
    return net if shift == 0 else ShiftedInputs(net, shift)


@dataclass(frozen=True)
class TestTime:
    """The test-time settings around a network, with the defaults of ``sschsr-predict`` and ``sschsr-eval``.

    Attributes:
        tta: passes of the self-ensemble (1, 2, 4 or 8; :data:`~sschsr.models.ensemble.TRANSFORMS`).
        flow_factor: shrink factor of the pair the flow network runs on (None: 2 for pairs of at least
            512 px a side, else 1).
        flow_refine: steps of the flow's refinement against the LR side (0: off).
        back_project: conjugate-gradient steps of back-projection (0: off).
        psf: the LR data's PSF (:data:`PSF_CHOICES`, :func:`parse_psf`).
        lr_grid: where the LR pixels sit on the HR grid: ``paper`` or ``block``.
        refiner: other fields of the flow refinement (:class:`~sschsr.ops.flow_refine.FlowRefiner`; None: its
            defaults).
        correction_std: back-projection's damping (:func:`~sschsr.ops.back_projection.back_project`; None:
            the exact fit).

    Raises:
        InputError: a setting out of range (checked at construction).
    """

    __test__ = False  # not a pytest test class

    tta: int = DEFAULT_TTA
    flow_factor: int | None = None
    flow_refine: int = DEFAULT_FLOW_REFINE
    back_project: int = BACK_PROJECT_STEPS
    psf: str = "auto"
    lr_grid: str = "paper"
    refiner: dict[str, Any] | None = None
    correction_std: float | None = CORRECTION_STD

    def __post_init__(self) -> None:
        if self.tta not in TRANSFORMS:
            raise InputError(f"tta must be one of {sorted(TRANSFORMS)}; got {self.tta}")
        if self.flow_factor is not None:
            check_flow_factor(self.flow_factor, f"flow_factor={self.flow_factor}")
        check_steps(self.flow_refine, f"flow_refine={self.flow_refine}")
        check_steps(self.back_project, f"back_project={self.back_project}")
        if self.lr_grid not in LR_GRIDS:
            raise InputError(f"lr_grid={self.lr_grid}: expected one of {', '.join(LR_GRIDS)}")

    @classmethod
    def from_settings(cls, **settings: Any) -> TestTime:
        """The settings given, the defaults for those missing or None (a Hydra config's ``null``)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(settings) - fields
        if unknown:
            raise InputError(
                f"unknown test-time settings {sorted(unknown)}: the settings are {sorted(fields)}"
            )
        return cls(**{k: v for k, v in settings.items() if v is not None})

    def build(self, net: nn.Module, scale: int) -> nn.Module:
        """``net`` wrapped in the test-time steps for LR data degraded at ``scale`` (module docstring).

        The loaded network is changed in place (its ``coarse_flow`` and ``flow_refiner``); the returned module
        runs ``forward(lr_up, ref, rgb_hsi) -> dict`` as ``net`` does.

        Raises:
            InputError: a PSF the data cannot have (:func:`parse_psf`).
        """
        psf = parse_psf(self.psf, scale)
        net = with_flow_refinement(
            with_coarse_flow(net, scale, self.flow_factor),
            scale,
            self.flow_refine,
            self.refiner,
            psf,
            self.lr_grid,
        )
        projected = with_back_projection(
            with_tta(net, scale, self.tta), scale, self.back_project, self.correction_std, psf, self.lr_grid
        )
        return on_lr_grid(projected, scale, self.lr_grid)

    def describe(self) -> str:
        """One line: what runs (for summaries and logs)."""
        passes = "1 pass" if self.tta == 1 else f"self-ensemble of {self.tta}"
        return (
            f"{passes}, flow on the pair shrunk by {self.flow_factor or 'auto'}, {self.flow_refine} refinement "
            f"steps, {self.back_project} back-projection steps, PSF {self.psf}, LR grid {self.lr_grid}"
        )


def psf_estimates(model: nn.Module, scale: int, clear: bool = False) -> dict[str, list]:
    """What the test-time steps of ``model`` (built by :meth:`TestTime.build`) estimated of the LR data's
    PSF since the last call with ``clear``: ``from_reference`` (the flow refinement's, one line per image or
    tile) and ``from_output`` (back-projection's: ``psf``, ``source``, ``noise_mean`` per image or tile)."""
    found: dict[str, list] = {"from_reference": [], "from_output": []}
    for module in model.modules():
        refiner = getattr(module, "flow_refiner", None)
        if refiner is not None and getattr(refiner, "log", None):
            found["from_reference"] += [e.describe(scale) for e in refiner.log]
            if clear:
                refiner.log.clear()
        if isinstance(module, BackProjected) and module.estimates:
            found["from_output"] += list(module.estimates)
            if clear:
                module.estimates.clear()
    return found
