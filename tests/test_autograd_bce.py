"""binary_cross_entropy_with_logits: gradients for input and target against torch.autograd (issue 15, bug 11)."""
from __future__ import annotations

import numpy as np
import pytest

from lepton_kernels.autograd import Tensor
from lepton_kernels.nn import functional as F

torch = pytest.importorskip("torch")


def _grads(z, t, reduction, pos_weight, needs):
    """(loss, d/dz, d/dt) from lepton and from torch for the same float64 inputs and output gradient."""
    ours_z, ours_t = Tensor(z.copy(), requires_grad=needs[0]), Tensor(t.copy(), requires_grad=needs[1])
    their_z, their_t = (torch.tensor(z, requires_grad=needs[0]), torch.tensor(t, requires_grad=needs[1]))
    pw = None if pos_weight is None else np.asarray(pos_weight)
    ours = F.binary_cross_entropy_with_logits(ours_z, ours_t, reduction, pos_weight=pw)
    theirs = torch.nn.functional.binary_cross_entropy_with_logits(
        their_z, their_t, reduction=reduction, pos_weight=None if pw is None else torch.tensor(pw))
    g = np.random.default_rng(1).standard_normal(theirs.shape)
    ours.backward(g)
    theirs.backward(torch.tensor(g))
    pairs = [(ours, theirs.detach().numpy())]
    for mine, ref in ((ours_z, their_z), (ours_t, their_t)):
        pairs.append((mine.grad, None if ref.grad is None else ref.grad.numpy()))
    return pairs


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos_weight", [None, [0.5, 2.0, 1.0, 3.0]])
@pytest.mark.parametrize("needs", [(True, True), (False, True), (True, False)])
def test_input_and_target_gradients_match_torch(reduction, pos_weight, needs):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 4)) * 4
    t = rng.random((5, 4))  # soft targets: the gradient with respect to them is meaningful
    (loss, ref), (gz, ref_z), (gt, ref_t) = _grads(z, t, reduction, pos_weight, needs)
    np.testing.assert_allclose(loss.data, ref, rtol=1e-12, atol=1e-12)
    for mine, theirs in ((gz, ref_z), (gt, ref_t)):
        if theirs is None:
            assert mine is None
        else:
            assert mine is not None and mine.shape == theirs.shape == z.shape
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-12)


def test_mean_target_gradient_is_minus_input_over_n():
    """The issue's statement of the torch result: d mean / d target = -input / N element by element."""
    z = np.arange(-3, 3, dtype=np.float64).reshape(2, 3)
    t = Tensor(np.full((2, 3), 0.25), requires_grad=True)
    F.binary_cross_entropy_with_logits(Tensor(z), t).backward()
    assert t.grad.shape == (2, 3)
    np.testing.assert_allclose(t.grad, -z / z.size, rtol=1e-14)


def test_float32_target_gradient_keeps_the_targets_dtype():
    z = Tensor(np.linspace(-5, 5, 8, dtype=np.float32), requires_grad=True)
    t = Tensor(np.linspace(0, 1, 8, dtype=np.float32), requires_grad=True)
    F.binary_cross_entropy_with_logits(z, t, "sum").backward()
    assert t.grad.dtype == np.float32 and z.grad.dtype == np.float32
    np.testing.assert_allclose(t.grad, -z.data, rtol=1e-5, atol=1e-6)


def test_pos_weight_requiring_grad_is_refused_as_in_torch():
    z, t = Tensor(np.zeros((2, 3)), requires_grad=True), np.ones((2, 3))
    with pytest.raises(ValueError, match="pos_weight"):
        F.binary_cross_entropy_with_logits(z, t, pos_weight=Tensor(np.ones(3), requires_grad=True))
