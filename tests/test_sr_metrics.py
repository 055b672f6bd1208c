"""PSNR, SSIM, SAM, ERGAS: the conventions of DESIGN.md checked by hand and against torchmetrics."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics.functional.image import (
    error_relative_global_dimensionless_synthesis,
    peak_signal_noise_ratio,
    spectral_angle_mapper,
    structural_similarity_index_measure,
)

from sschsr.metrics import MAX_PSNR, HSIMetrics, ergas, psnr, sam_degrees, sr_metrics, ssim


def pixel(*values: float) -> torch.Tensor:
    """One pixel with the given spectrum, ``(1, C, 1, 1)``."""
    return torch.tensor(values).view(1, -1, 1, 1)


class TestPSNR:
    def test_per_band_hand_value_differs_from_whole_cube(self):
        hr = torch.zeros(1, 2, 4, 4)
        sr = hr.clone()
        sr[:, 0] = 0.1  # MSE 1e-2: 20 dB
        sr[:, 1] = 0.01  # MSE 1e-4: 40 dB
        assert psnr(sr, hr).item() == pytest.approx(30.0, abs=1e-5)  # mean of 20 and 40 dB
        # torchmetrics without `dim` pools the squared errors of the cube: 10 log10(1 / 5.05e-3) = 22.97 dB
        whole = peak_signal_noise_ratio(sr, hr, data_range=1.0).item()
        assert whole == pytest.approx(10 * math.log10(1 / ((1e-2 + 1e-4) / 2)), abs=1e-4)
        assert abs(whole - psnr(sr, hr).item()) > 5

    def test_matches_torchmetrics_per_band(self, generator):
        hr = torch.rand(3, 5, 16, 16, generator=generator)
        sr = (hr + 0.05 * torch.randn(3, 5, 16, 16, generator=generator)).clamp(0, 1)
        expected = peak_signal_noise_ratio(sr, hr, data_range=1.0, dim=(2, 3), reduction="none").mean(1)
        got = psnr(sr, hr)
        assert got.shape == (3,) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)

    def test_exact_band_is_capped(self):
        hr = torch.rand(2, 3, 8, 8)
        assert torch.equal(psnr(hr, hr), torch.full((2,), MAX_PSNR))

    def test_shape_mismatch_raises(self):
        with pytest.raises(ValueError, match="same shape"):
            psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


class TestSSIM:
    def test_identical_is_one(self, generator):
        hr = torch.rand(2, 11, 16, 16, generator=generator)
        torch.testing.assert_close(ssim(hr, hr), torch.ones(2))

    def test_constant_images_hand_value(self):
        # constant bands: SSIM = (2ab + c1) / (a^2 + b^2 + c1), c1 = (0.01 * data_range)^2 = 1e-4 for range 1
        a, b = 0.02, 0.01
        sr = torch.full((1, 2, 16, 16), a)
        hr = torch.full((1, 2, 16, 16), b)
        hr[:, 1] = a  # band 1 exact: SSIM 1
        band0 = (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)
        assert ssim(sr, hr).item() == pytest.approx((band0 + 1.0) / 2, abs=1e-5)

    def test_is_the_mean_of_single_band_ssims(self, generator):
        # 11 bands: more than one chunk of SSIM_BAND_CHUNK bands
        hr = torch.rand(2, 11, 24, 24, generator=generator)
        sr = (hr + 0.1 * torch.randn(2, 11, 24, 24, generator=generator)).clamp(0, 1)
        per_band = torch.stack(
            [
                structural_similarity_index_measure(sr[:, [b]], hr[:, [b]], data_range=1.0, reduction="none")
                for b in range(11)
            ],
            dim=1,
        )
        torch.testing.assert_close(ssim(sr, hr), per_band.mean(1), atol=1e-5, rtol=0)

    def test_data_range_one_differs_from_estimated_range(self, generator):
        # dark, low-range data: torchmetrics with data_range=None takes the range from the data (about 0.1)
        hr = 0.1 * torch.rand(1, 4, 32, 32, generator=generator)
        sr = (hr + 0.01 * torch.randn(1, 4, 32, 32, generator=generator)).clamp(0, 0.1)
        ours = ssim(sr, hr).item()
        fixed = structural_similarity_index_measure(sr, hr, data_range=1.0).item()
        estimated = structural_similarity_index_measure(sr, hr, data_range=None).item()
        assert ours == pytest.approx(fixed, abs=1e-5)
        assert abs(ours - estimated) > 0.01


class TestSAM:
    def test_orthogonal_is_90_degrees(self):
        assert sam_degrees(pixel(0.0, 2.0, 0.0), pixel(1.0, 0.0, 0.0)).item() == pytest.approx(90.0)

    def test_scaled_spectrum_is_zero(self, generator):
        hr = torch.rand(2, 31, 8, 8, generator=generator) + 0.1
        assert sam_degrees(0.37 * hr, hr).abs().max().item() < 1e-5

    def test_hand_value_and_mean_over_pixels(self):
        sr = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).T.reshape(1, 2, 1, 2)  # pixels (1, 1) and (1, 0)
        hr = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).T.reshape(1, 2, 1, 2)
        assert sam_degrees(sr, hr).item() == pytest.approx((45.0 + 0.0) / 2)

    def test_degrees_of_torchmetrics_radians(self, generator):
        hr = torch.rand(3, 6, 8, 8, generator=generator) + 0.05
        sr = (hr + 0.1 * torch.randn(3, 6, 8, 8, generator=generator)).clamp_min(0.01)
        expected = (
            torch.rad2deg(spectral_angle_mapper(sr.double(), hr.double(), reduction="none"))
            .flatten(1)
            .mean(1)
        )
        torch.testing.assert_close(sam_degrees(sr, hr), expected.float(), atol=1e-4, rtol=0)

    def test_zero_spectra_are_finite(self):
        assert sam_degrees(pixel(0.0, 0.0), pixel(0.0, 0.0)).item() == 0.0
        assert sam_degrees(pixel(0.0, 0.0), pixel(1.0, 0.0)).item() == pytest.approx(90.0)


class TestERGAS:
    def test_hand_value(self):
        hr = torch.empty(1, 2, 4, 4)
        hr[:, 0], hr[:, 1] = 0.5, 0.2
        sr = hr.clone()
        sr[:, 0], sr[:, 1] = 0.55, 0.1  # RMSE / mean: 0.05 / 0.5 = 0.1 and 0.1 / 0.2 = 0.5
        expected = 100 / 4 * math.sqrt((0.1**2 + 0.5**2) / 2)  # 9.014
        assert ergas(sr, hr, scale=4).item() == pytest.approx(expected, rel=1e-6)
        assert ergas(sr, hr, scale=8).item() == pytest.approx(expected / 2, rel=1e-6)

    def test_matches_torchmetrics_with_ratio_scale(self, generator):
        hr = torch.rand(3, 5, 16, 16, generator=generator) + 0.1
        sr = hr + 0.05 * torch.randn(3, 5, 16, 16, generator=generator)
        for s in (4, 8, 16):
            expected = error_relative_global_dimensionless_synthesis(
                sr.double(), hr.double(), ratio=s, reduction="none"
            )
            torch.testing.assert_close(ergas(sr, hr, s), expected.float(), rtol=1e-5, atol=0)

    def test_zero_mean_band_is_finite(self):
        hr = torch.zeros(1, 2, 4, 4)
        hr[:, 1] = 0.5
        assert torch.isfinite(ergas(hr + 0.01, hr, 4)).all()


class TestHSIMetrics:
    def test_mean_over_images_across_updates(self, generator):
        hr = torch.rand(5, 4, 16, 16, generator=generator)
        sr = (hr + 0.05 * torch.randn(5, 4, 16, 16, generator=generator)).clamp(0, 1)
        m = HSIMetrics(scale=4, prefix="val/")
        m.update(sr[:2], hr[:2])
        m.update(sr[2:], hr[2:])
        out = m.compute()
        assert set(out) == {"val/psnr", "val/ssim", "val/sam", "val/ergas"}
        per_image = sr_metrics(sr, hr, 4)
        for name, values in per_image.items():
            assert out[f"val/{name}"].item() == pytest.approx(values.mean().item(), rel=1e-5)
        m.reset()
        m.update(hr, hr)
        assert m.compute()["val/psnr"].item() == MAX_PSNR

    def test_float32_under_bf16_autocast(self, generator):
        hr = torch.rand(2, 4, 16, 16, generator=generator)
        sr = (hr + 0.02).to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            values = sr_metrics(sr, hr.to(torch.bfloat16), 4)
        for v in values.values():
            assert v.dtype == torch.float32 and torch.isfinite(v).all()
        # computed from the bf16 values in full precision: equal to the float32 computation on them
        torch.testing.assert_close(values["psnr"], psnr(sr.float(), hr.to(torch.bfloat16).float()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        hr = torch.rand(4, 3, 16, 16, generator=g)
        sr = (hr + 0.05 * torch.randn(4, 3, 16, 16, generator=g)).clamp(0, 1)
        m = HSIMetrics(scale=4)
        m.update(sr[rank * 2 : rank * 2 + 2], hr[rank * 2 : rank * 2 + 2])  # each rank sees half
        out = {k: float(v) for k, v in m.compute().items()}
        if rank == 0:
            queue.put((out, {k: float(v.mean()) for k, v in sr_metrics(sr, hr, 4).items()}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_metrics_sync_across_processes():
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(2, _free_port(), queue), nprocs=2, join=True, start_method="spawn")
    synced, everything = queue.get()
    for name, value in everything.items():
        assert synced[name] == pytest.approx(value, rel=1e-5)
