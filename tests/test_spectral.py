import numpy as np
import pytest
import torch

from sschsr.data.spectral import (
    camera_srf,
    default_wavelengths,
    match_histograms,
    match_moments,
    random_camera_srf,
    render,
    srf_is_fallback,
)
from sschsr.errors import InputError

WL31 = default_wavelengths(31)


class TestCameraSrf:
    @pytest.mark.parametrize("camera", ["cie1931", "gaussian"])
    def test_rows_sum_to_one_and_nonnegative(self, camera):
        srf = camera_srf(WL31, camera)
        assert srf.shape == (3, 31) and srf.dtype == np.float32
        assert np.allclose(srf.sum(1), 1.0, atol=1e-6)
        assert srf.min() >= 0

    @pytest.mark.parametrize("camera", ["cie1931", "gaussian"])
    def test_flat_spectrum_renders_grey(self, camera):
        srf = torch.from_numpy(camera_srf(WL31, camera))
        hsi = torch.full((31, 4, 5), 0.37)
        rgb = render(hsi, srf)
        assert rgb.shape == (3, 4, 5)
        assert torch.allclose(rgb, torch.full_like(rgb, 0.37), atol=1e-6)

    def test_cie_colour_matching_functions_are_equal_energy(self):
        # CIE 1931: x, y and z bar integrate to the same value, so illuminant E has x = y = 1/3
        import colour

        cmfs = colour.MSDS_CMFS["CIE 1931 2 Degree Standard Observer"]
        sums = cmfs.values[(cmfs.wavelengths >= 380) & (cmfs.wavelengths <= 780)].sum(0)
        assert sums[1] == pytest.approx(106.857, rel=2e-3)
        assert np.allclose(sums / sums[1], 1.0, atol=2e-3)

    def test_cie_rendering_orders_primaries(self):
        # a red-only spectrum (620-700 nm) renders with R dominant, a blue one (420-480) with B dominant
        srf = torch.from_numpy(camera_srf(WL31))
        red = torch.from_numpy(((WL31 >= 620) & (WL31 <= 700)).astype(np.float32))[:, None, None]
        blue = torch.from_numpy(((WL31 >= 420) & (WL31 <= 480)).astype(np.float32))[:, None, None]
        r, b = render(red, srf).flatten(), render(blue, srf).flatten()
        assert r[0] > r[1] and r[0] > r[2]
        assert b[2] > b[0] and b[2] > b[1]

    def test_fallback_outside_visible(self):
        wl = np.linspace(750, 1000, 20)
        assert srf_is_fallback(wl)
        srf = camera_srf(wl)
        assert np.allclose(srf.sum(1), 1) and srf.shape == (3, 20)
        # false colour: R peaks at the long end, B at the short end
        assert srf[0].argmax() > srf[1].argmax() > srf[2].argmax()
        assert not srf_is_fallback(WL31)

    def test_tables_from_shared_data(self, shared_data):
        srf_dir = shared_data / "srf"
        for name in ["NTIRE2022_RGB_Camera_QE.csv", "Nikon_D700_Qu.csv", "nikon_d700_create_F.csv"]:
            srf = camera_srf(WL31, srf_dir / name)
            assert np.allclose(srf.sum(1), 1, atol=1e-6)
            # red channel weighted to long wavelengths, blue to short, whatever the table's layout
            centroid = (srf * WL31).sum(1)
            assert centroid[0] > centroid[1] > centroid[2], name

    def test_bad_camera(self, tmp_path):
        with pytest.raises(InputError, match="unknown camera"):
            camera_srf(WL31, "no_such_camera")
        bad = tmp_path / "bad.csv"
        bad.write_text("nm,X,Y\n400,1,2\n500,1,2\n")
        with pytest.raises(InputError, match="no R channel"):
            camera_srf(WL31, bad)

    def test_random_camera_is_deterministic_and_plausible(self):
        a = random_camera_srf(WL31, torch.Generator().manual_seed(3))
        b = random_camera_srf(WL31, torch.Generator().manual_seed(3))
        c = random_camera_srf(WL31, torch.Generator().manual_seed(4))
        assert np.array_equal(a, b) and not np.allclose(a, c)
        assert np.allclose(a.sum(1), 1, atol=1e-6)
        centroid = (a * WL31).sum(1)
        assert centroid[0] > centroid[1] > centroid[2]


class TestRender:
    def test_batch_and_gradient(self):
        srf = torch.from_numpy(camera_srf(WL31)).double()
        hsi = torch.rand(2, 31, 3, 3, dtype=torch.float64, requires_grad=True)
        assert render(hsi, srf).shape == (2, 3, 3, 3)
        assert torch.autograd.gradcheck(lambda x: render(x, srf), (hsi,))

    def test_band_mismatch(self):
        with pytest.raises(ValueError, match="bands"):
            render(torch.rand(30, 4, 4), camera_srf(WL31))


class TestColourMatching:
    def test_moments(self, generator):
        src = torch.rand(2, 3, 16, 16, generator=generator)
        ref = torch.rand(2, 3, 20, 24, generator=generator) * 0.3 + 0.5
        out = match_moments(src, ref)
        assert torch.allclose(out.mean((-2, -1)), ref.mean((-2, -1)), atol=1e-5)
        assert torch.allclose(out.std((-2, -1)), ref.std((-2, -1)), atol=1e-4)

    def test_histograms_equal_size_exact(self, generator):
        src = torch.rand(3, 8, 8, generator=generator)
        ref = torch.rand(3, 8, 8, generator=generator) ** 3
        out = match_histograms(src, ref)
        # same multiset of values as the reference, in the rank order of the source
        assert torch.equal(out.flatten(1).sort(1).values, ref.flatten(1).sort(1).values)
        assert torch.equal(out.flatten(1).argsort(1), src.flatten(1).argsort(1))

    def test_histograms_other_size_and_monotone_invariance(self, generator):
        src = torch.rand(1, 3, 10, 12, generator=generator)
        ref = torch.rand(1, 3, 17, 9, generator=generator)
        a = match_histograms(src, ref)
        b = match_histograms(src**2.2 * 0.5, ref)  # a monotone change of the source changes nothing
        assert a.shape == src.shape
        assert torch.allclose(a, b)
        assert a.min() >= ref.min() - 1e-6 and a.max() <= ref.max() + 1e-6
