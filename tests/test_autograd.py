"""Autograd Tensor: every differentiable op against torch (outputs and gradients), micrograd style."""
from __future__ import annotations

import numpy as np
import pytest

from lepton_kernels.autograd import Tensor, no_grad

torch = pytest.importorskip("torch")


def helper_test_op(shapes, lk_fn, torch_fn, rtol=1e-5, atol=1e-6, seed=0):
    """Run the same function on lepton Tensors and torch tensors; compare outputs and input gradients."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) + 0.5 for s in shapes]
    ours = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = lk_fn(*ours), torch_fn(*theirs)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=rtol, atol=atol)
    grad = rng.standard_normal(ref.shape).astype(np.float32)
    out.backward(grad)
    ref.backward(torch.tensor(grad))
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.grad, t.grad.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("shapes", [[(3, 4), (3, 4)], [(3, 4), (4,)], [(2, 3, 4), (3, 1)], [(1, 4), (5, 1)]])
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_broadcasting_arithmetic(shapes, op):
    fns = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a / (b * b + 1)}
    helper_test_op(shapes, fns[op], fns[op])


def test_scalars_on_either_side():
    helper_test_op([(3, 4)], lambda a: 2 - a * 3 + 1 / (a * a + 1) - -a, lambda a: 2 - a * 3 + 1 / (a * a + 1) - -a)


@pytest.mark.parametrize("shapes", [[(3, 4), (4, 5)], [(2, 3, 4), (4, 5)], [(2, 3, 4), (2, 4, 5)], [(4,), (4, 5)],
                                    [(3, 4), (4,)], [(64, 400), (400, 120)]])
def test_matmul(shapes):
    helper_test_op(shapes, lambda a, b: a @ b, lambda a, b: a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, False)])
def test_reductions(axis, keepdims):
    helper_test_op([(2, 3, 4)], lambda a: a.sum(axis=axis, keepdims=keepdims) * 2,
                   lambda a: a.sum(dim=axis, keepdim=keepdims) * 2 if axis is not None else a.sum() * 2)
    helper_test_op([(2, 3, 4)], lambda a: a.mean(axis=axis, keepdims=keepdims),
                   lambda a: a.mean(dim=axis, keepdim=keepdims) if axis is not None else a.mean())


def test_reshape_and_flatten():
    helper_test_op([(2, 3, 4, 5)], lambda a: a.reshape(6, 20) * 3, lambda a: a.reshape(6, 20) * 3)
    helper_test_op([(2, 3, 4, 5)], lambda a: a.flatten(1) * a.flatten(1), lambda a: a.flatten(1) * a.flatten(1))
    helper_test_op([(2, 3, 4, 5)], lambda a: a.flatten(), lambda a: a.flatten())


def test_gradients_accumulate_until_zero_grad():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [5, 5, 5])
    x.zero_grad()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2, 2, 2])


def test_shared_subexpressions_and_diamonds():
    helper_test_op([(3,)], lambda a: (lambda b: b * b + b)(a * 2) + a, lambda a: (lambda b: b * b + b)(a * 2) + a)


def test_no_grad_and_detach_record_nothing():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    z = x.detach() * 2
    assert not z.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        z.sum().backward()


def test_backward_argument_errors():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match="non-scalar"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="shape"):
        (x * 2).backward(np.ones(4, np.float32))
    with pytest.raises(TypeError, match="Tensor"):
        Tensor(object())


def test_leaf_gradients_do_not_alias_each_other():
    a = Tensor(np.ones(3, np.float32), requires_grad=True)
    b = Tensor(np.ones(3, np.float32), requires_grad=True)
    (a + b).sum().backward()
    a.grad *= 5
    np.testing.assert_array_equal(b.grad, [1, 1, 1])


def test_deep_graph_does_not_recurse():
    x = Tensor(np.ones(2, np.float32), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1, 1])
