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


def test_no_graph_without_grad_or_under_no_grad():
    from lepton_kernels.nn import functional as F

    x = Tensor(np.ones((1, 1, 4, 4), np.float32))
    w = Tensor(np.ones((1, 1, 3, 3), np.float32), requires_grad=True)
    for y in (x * 2, F.relu(x), (x + x).sum()):  # no input requires grad
        assert not y.requires_grad and y._node is None
    with no_grad():
        for y in (w * 2, F.conv2d(x, w), F.relu(F.conv2d(x, w)).sum()):
            assert not y.requires_grad and y._node is None
    assert F.conv2d(x, w)._node is not None


def test_first_leaf_gradient_never_aliases_an_array_in_use():
    b = np.arange(1, 4, dtype=np.float32)  # the user's array, saved by Mul
    a = Tensor(np.ones(3, np.float32), requires_grad=True)
    (a * b).sum().backward()  # d/da is b itself: the leaf must get its own copy
    assert not np.shares_memory(a.grad, b)
    (a * b).sum().backward()  # accumulates into a's own buffer, never into b
    np.testing.assert_array_equal(b, [1, 2, 3])
    np.testing.assert_array_equal(a.grad, [2, 4, 6])
    c = Tensor(np.full(3, 2, np.float32), requires_grad=True)
    (a * c).sum().backward()
    assert not np.shares_memory(a.grad, c.data) and not np.shares_memory(c.grad, a.data)


def test_backward_argument_is_never_aliased_by_a_leaf():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    g = np.full(3, 2, np.float32)
    x.backward(g)
    (x + 0).backward(g)  # Add hands the caller's array on unchanged
    assert not np.shares_memory(x.grad, g)
    g[:] = 100
    np.testing.assert_array_equal(x.grad, [4, 4, 4])


def test_accumulation_is_in_place_only_into_an_unshared_buffer():
    from lepton_kernels.nn import functional as F

    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 1, 5, 5)).astype(np.float32))
    w = Tensor(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), requires_grad=True)

    def loss():
        return F.relu(F.conv2d(x, w)).sum()

    loss().backward()
    first = w.grad.copy()
    address = w.grad.__array_interface__["data"][0]
    loss().backward()  # nothing else holds w.grad: added in place
    assert w.grad.__array_interface__["data"][0] == address
    np.testing.assert_allclose(w.grad, 2 * first, rtol=1e-6)
    held = w.grad  # the user holds the buffer: a new one is made, theirs is left alone
    loss().backward()
    assert w.grad is not held
    np.testing.assert_allclose(held, 2 * first, rtol=1e-6)
    np.testing.assert_allclose(w.grad, 3 * first, rtol=1e-6)
    del held
    view = w.grad[0]  # a view keeps its base alive: still not written
    snapshot = view.copy()
    loss().backward()
    np.testing.assert_array_equal(view, snapshot)
    np.testing.assert_allclose(w.grad, 4 * first, rtol=1e-6)


def test_sum_gradient_reaches_a_leaf_as_a_writeable_array():
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    x.sum().backward()
    x.sum().backward()
    assert x.grad.flags.writeable and x.grad.strides != (0, 0)
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2))


def test_product_with_the_sum_gradient_keeps_dtype_and_fan_out():
    a = Tensor(np.ones(3, np.float32), requires_grad=True)
    b64 = np.arange(3, dtype=np.float64)
    (a * b64).sum().backward()  # float32 * float64: the gradient is float64 like torch's promotion of numpy
    np.testing.assert_array_equal(a.grad, b64)
    g1, g2 = np.array([1, 2, 3], np.float32), np.array([4, 5, 6], np.float32)
    helper_test_op([(3,)], lambda t: (t * g1).sum() + (t * g2).sum() + (t * t).sum(),
                   lambda t: (t * torch.tensor(g1)).sum() + (t * torch.tensor(g2)).sum() + (t * t).sum())
    np.testing.assert_array_equal(g1, [1, 2, 3])
    np.testing.assert_array_equal(g2, [4, 5, 6])
