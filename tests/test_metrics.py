import pytest
import torch

from sschsr.metrics import luminance, rank_correlation


class TestRankCorrelation:
    def test_monotone_transform_is_one(self, generator):
        a = torch.rand(16, 16, generator=generator)
        assert rank_correlation(a, a**2.2 * 0.5 + 0.1) == pytest.approx(1.0)
        assert rank_correlation(a, -a) == pytest.approx(-1.0)

    def test_known_value(self):
        # ranks (0, 1, 2, 3) vs (1, 0, 3, 2): Spearman = 1 - 6 * 4 / (4 * 15) = 0.6
        a = torch.tensor([1.0, 2.0, 3.0, 4.0])
        b = torch.tensor([2.0, 1.0, 4.0, 3.0])
        assert rank_correlation(a, b) == pytest.approx(0.6)

    def test_mask_and_errors(self, generator):
        a = torch.rand(8, 8, generator=generator)
        b = a.clone()
        b[:, 4:] = torch.rand(8, 4, generator=generator)
        mask = torch.zeros(8, 8, dtype=torch.bool)
        mask[:, :4] = True
        assert rank_correlation(a, b, mask) == pytest.approx(1.0)
        assert torch.isnan(torch.tensor(rank_correlation(a, b, torch.zeros_like(mask))))
        with pytest.raises(ValueError):
            rank_correlation(a, b[:4])


def test_luminance_shape():
    assert luminance(torch.rand(2, 3, 5, 7)).shape == (2, 5, 7)
