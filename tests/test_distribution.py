import numpy as np
import scipy.stats
import torch

from toto.model.distribution import MixtureOfStudentTsOutput, StudentTOutput


def test_mixture_log_prob_matches_scipy_student_t_mixture():
    torch.manual_seed(0)
    head = MixtureOfStudentTsOutput(embed_dim=16, k_components=5)
    hidden = torch.randn(3, 7, 16)
    values = torch.randn(3, 7) * 3
    dist = head(hidden)
    components = dist.component_distribution
    weights = dist.mixture_distribution.probs.detach().numpy()
    expected = np.log(
        (weights * scipy.stats.t.pdf(values.numpy()[..., None], components.df.detach().numpy(),
                                     components.loc.detach().numpy(), components.scale.detach().numpy())).sum(-1)
    )
    np.testing.assert_allclose(dist.log_prob(values).detach().numpy(), expected, rtol=1e-4)
    assert bool((components.df > 2).all())
    expected_mean = (weights * components.loc.detach().numpy()).sum(-1)
    np.testing.assert_allclose(dist.mean.detach().numpy(), expected_mean, rtol=1e-5, atol=1e-6)


def test_single_student_t_head():
    head = StudentTOutput(embed_dim=4)
    dist = head(torch.randn(2, 3, 4))
    assert dist.batch_shape == (2, 3) and bool((dist.df > 2).all())
