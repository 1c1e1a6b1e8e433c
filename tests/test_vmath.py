"""kernels/vmath.py: the vectorised float32 exp family against float64 NumPy over the whole
float32 range (every 997th bit pattern: all exponents, both signs, denormals), with the
error bounds its docstring states; NaN, +-inf; and the activation kernels compile to
vector code with no libm call left in them."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from darkcfg.kernels import activations as ka
from darkcfg.kernels import epilogue
from darkcfg.kernels import vmath as vm

from .helpers import tiny_net

A, B = np.float32(ka.GELU_A), np.float32(ka.GELU_B)


def _loop(f):
    @numba.njit(error_model="numpy")
    def run(x, out):
        for i in range(x.size):
            out[i] = f(x[i])
    return run


@numba.njit(error_model="numpy")
def _gelu(x, out):
    for i in range(x.size):
        out[i] = vm.gelu(x[i], A, B)


@numba.njit(error_model="numpy")
def _gelu_gradient(x, out):
    for i in range(x.size):
        out[i] = vm.gelu_gradient(x[i], A, B)


# float64 references, written in forms that do not cancel (1 + tanh(u) = 2 sigmoid(2u))
def _sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))


def _mish(x):
    return x * np.tanh(np.logaddexp(0.0, x))


def _mish_gradient(x):
    t = np.tanh(np.logaddexp(0.0, x))
    return t + x * (1 - t * t) * _sigmoid(x)


def _u(x):
    return np.float64(A) * x + np.float64(B) * x ** 3


def _gelu64(x):
    return x * _sigmoid(2 * _u(x))


def _gelu_gradient64(x):
    s, s_ = _sigmoid(2 * _u(x)), _sigmoid(-2 * _u(x))
    return s + 2 * x * s * s_ * (np.float64(A) + 3 * np.float64(B) * x * x)


# name: (kernel, float64 reference, bound in ulp of the exact float32 result)
VALUES = {
    "exp": (_loop(vm.exp), np.exp, 1.1),
    "expm1": (_loop(vm.expm1), np.expm1, 3.5),
    "logistic": (_loop(vm.logistic), _sigmoid, 2.5),
    "tanh": (_loop(vm.tanh), np.tanh, 1.5),
    "loggy": (_loop(vm.loggy), lambda x: np.tanh(x / 2), 1.5),
    "swish": (_loop(vm.swish), lambda x: x * _sigmoid(x), 3.0),
    "mish": (_loop(vm.mish), _mish, 4.0),
    "gelu": (_gelu, _gelu64, 3.0),
}
# Derivatives cross zero (mish' at x = -1.19, gelu' at -0.75), where the exact result is
# the difference of two terms of order 1: their bound is in ulp of the result plus 2^-24.
GRADIENTS = {
    "mish_gradient": (_loop(vm.mish_gradient), _mish_gradient, 1.5),
    "gelu_gradient": (_gelu_gradient, _gelu_gradient64, 1.5),
}
TINY = 2.0 ** -100          # smaller exact results may come back as 0 (module docstring)


@pytest.fixture(scope="module")
def sweep():
    x = np.arange(0, 2 ** 32, 997, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([x[np.isfinite(x)],
                        np.float32([0.0, -0.0, 20.0, -20.0, 87.0, -87.0, 88.72, 89.0, 1e-45,
                                    -1e-45, 1.1754944e-38, -1.1754944e-38])])
    return x, x.astype(np.float64)


def _run(f, x):
    out = np.full_like(x, np.nan)
    f(x, out)
    return out


def _ulps(got, exact, floor=0.0):
    e32 = exact.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.abs(got.astype(np.float64) - exact) / (
            np.spacing(np.abs(e32)).astype(np.float64) + floor)


@pytest.mark.parametrize("name", sorted(VALUES))
def test_values_within_stated_ulps(sweep, name):
    f, ref, bound = VALUES[name]
    x, xd = sweep
    got = _run(f, x)
    with np.errstate(over="ignore", invalid="ignore"):
        exact = ref(xd)
        e32 = exact.astype(np.float32)
    normal = (np.abs(exact) >= TINY) & np.isfinite(e32)
    err = _ulps(got[normal], exact[normal])
    assert err.max() <= bound, f"{name}: {err.max():.2f} ulp at x={x[normal][err.argmax()]}"
    small = np.abs(exact) < TINY
    assert np.all(np.abs(got[small] - exact[small]) < TINY)
    # overflow where and only where the exact result overflows float32
    big = np.abs(exact) >= TINY
    assert np.array_equal(np.isinf(got[big]), np.isinf(e32[big]))
    # no denormal result (their arithmetic costs a microcode assist on many x86 cores)
    assert not np.any((got != 0) & (np.abs(got) < np.finfo(np.float32).tiny))


@pytest.mark.parametrize("name", sorted(GRADIENTS))
def test_gradients_within_stated_error(sweep, name):
    f, ref, bound = GRADIENTS[name]
    x, xd = sweep
    got = _run(f, x)
    with np.errstate(over="ignore", invalid="ignore"):
        exact = ref(xd)
    ok = np.isfinite(exact)
    err = _ulps(got[ok], exact[ok], floor=2.0 ** -24)
    assert err.max() <= bound, f"{name}: {err.max():.2f} at x={x[ok][err.argmax()]}"
    assert not np.any((got != 0) & (np.abs(got) < np.finfo(np.float32).tiny))


LIMITS = {   # f(-inf), f(+inf)
    "exp": (0.0, np.inf), "expm1": (-1.0, np.inf), "logistic": (0.0, 1.0),
    "tanh": (-1.0, 1.0), "loggy": (-1.0, 1.0), "swish": (0.0, np.inf),
    "mish": (0.0, np.inf), "gelu": (0.0, np.inf), "mish_gradient": (0.0, 1.0),
    "gelu_gradient": (0.0, 1.0),
}


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_infinities_and_nan(name):
    f = {**VALUES, **GRADIENTS}[name][0]
    got = _run(f, np.float32([-np.inf, np.inf, np.nan, -np.nan]))
    assert got[0] == LIMITS[name][0] and got[1] == LIMITS[name][1]
    assert np.isnan(got[2]) and np.isnan(got[3])


@pytest.mark.slow          # compiles the kernels afresh: minutes
def test_activations_compile_to_vector_code_without_libm_calls():
    """The activation kernels, the fused conv tail included, are AVX/SSE vector loops with
    no call into the C library's exp/tanh/log1p (whose time depends on the values)."""
    x = np.linspace(-30, 30, 64, dtype=np.float32)
    for name in ("logistic", "tanh", "swish", "mish", "gelu", "elu", "selu", "loggy"):
        ka.activate(x.copy(), name)
    ka.gradient(x.copy(), x.copy(), x.copy(), "mish")
    net = tiny_net("[convolutional]\nfilters=8\nsize=3\nactivation=mish\n")
    net.forward(np.ones((1, 4, 6, 6), np.float32))
    for kernel in (ka._activate_flat.serial, ka._gradient_flat, epilogue.tail_runs):
        # compiled afresh: a kernel loaded from Numba's disk cache has no IR to inspect
        fresh = numba.njit(error_model="numpy")(kernel.py_func)
        for sig in kernel.signatures:
            fresh.compile(sig)
            ir = fresh.inspect_llvm(sig)
            for fn in ("@exp(", "@expf(", "@tanh(", "@tanhf(", "@log1p(", "@llvm.exp."):
                assert fn not in ir, f"{kernel.__name__} still calls {fn}"
            assert "x float>" in ir, f"{kernel.__name__}: no float32 vector code"
