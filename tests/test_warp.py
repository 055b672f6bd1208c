import pytest
import torch

from sschsr.ops.warp import coords_grid, flow_warp, in_bounds


class TestCoordsGrid:
    def test_values(self):
        g = coords_grid(2, 3, 4)
        assert g.shape == (2, 2, 3, 4)
        assert torch.equal(g[0, 0, 1], torch.arange(4.0))  # x along columns
        assert torch.equal(g[0, 1, :, 2], torch.arange(3.0))  # y along rows


class TestFlowWarp:
    def test_zero_flow_is_identity(self, generator):
        x = torch.rand(2, 3, 9, 13, generator=generator)
        assert torch.allclose(flow_warp(x, torch.zeros(2, 2, 9, 13)), x, atol=1e-6)

    def test_integer_shift_known_answer(self, generator):
        # source pixel p appears in ref at p + (3, -2): warping ref by that flow gives the source back
        src = torch.rand(1, 1, 20, 20, generator=generator)
        ref = torch.zeros_like(src)
        ref[..., 0:18, 3:20] = src[..., 2:20, 0:17]
        flow = torch.zeros(1, 2, 20, 20)
        flow[:, 0], flow[:, 1] = 3.0, -2.0
        out = flow_warp(ref, flow)
        assert torch.allclose(out[..., 2:20, 0:17], src[..., 2:20, 0:17], atol=1e-6)
        valid = in_bounds(flow)
        assert valid[0, 2:, :17].all() and not valid[0, :2].any() and not valid[0, :, 17:].any()

    def test_subpixel_is_linear(self):
        ramp = torch.arange(10.0).expand(1, 1, 4, 10).contiguous()
        flow = torch.zeros(1, 2, 4, 10)
        flow[:, 0] = 0.25
        assert torch.allclose(flow_warp(ramp, flow)[..., :9], ramp[..., :9] + 0.25, atol=1e-5)

    def test_other_grid_size(self):
        x = torch.rand(1, 3, 16, 16)
        assert flow_warp(x, torch.zeros(1, 2, 8, 8)).shape == (1, 3, 8, 8)

    def test_gradcheck(self):
        x = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
        flow = (torch.rand(1, 2, 5, 6, dtype=torch.float64) - 0.5).requires_grad_()
        assert torch.autograd.gradcheck(lambda a, f: flow_warp(a, f, padding_mode="border"), (x, flow))

    def test_bad_shapes(self):
        with pytest.raises(ValueError, match="flow_warp"):
            flow_warp(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))
