"""The schedulers of the three LightningModules take short runs (debug presets: a few steps)."""

from functools import partial
from types import SimpleNamespace

import pytest
import torch

from sschsr.lit._optim import step_scheduler


def _module(steps: float):
    return SimpleNamespace(trainer=SimpleNamespace(estimated_stepping_batches=steps))


@pytest.mark.parametrize("steps", [3, 5, 20, 1000])
def test_one_cycle_takes_any_run_of_three_steps_or_more(steps):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1e-3, total_steps=None, pct_start=0.05)
    out = step_scheduler(_module(steps), opt, sched)
    scheduler = out["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(steps):  # every step of the run, as Lightning steps it: no ZeroDivisionError
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert max(lrs) == pytest.approx(1e-3, rel=0.05) and lrs[0] < 1e-3 and lrs[-1] < 1e-4
    if steps >= 40:  # long enough for the configured warm-up: kept as configured
        assert (
            scheduler.total_steps == steps
            and max(range(steps), key=lrs.__getitem__) == round(0.05 * steps) - 1
        )


def test_a_run_too_short_for_a_schedule_keeps_a_constant_learning_rate():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1e-3, total_steps=None, pct_start=0.05)
    assert step_scheduler(_module(2), opt, sched) is opt
    with pytest.raises(ValueError, match="total_steps"):
        step_scheduler(_module(float("inf")), opt, sched)
