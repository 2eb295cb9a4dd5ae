"""The functions CrypTen's `test/test_mpc.py` exercises on an MPCTensor, one record per function,
written as a JAX user would write them (jax.numpy / jax.nn / jax.lax), with CrypTen's input
ranges: `get_random_test_tensor` is uniform in about [-6, 6]; exp, reciprocal, sigmoid, tanh,
cos and sin use the grid 0.01 * [-1000, 1000] (reciprocal without 0); log and sqrt its positive
half; norm divides by 5 and uses tolerance 0.5. Variants CrypTen tests separately (public or
secret second operand, several dims/exponents/paddings) are outputs of one function here, so
one record = one compiled program.

Not records (no JAX function computes them deterministically or they are CrypTen's API, not a
tensor function): `bernoulli` and `dropout(training=True)` (random sampling), `repr`,
`share` getters/setters, `to(ptype)`, `shallow_copy`, `set`, in-place variants (`add_` ...),
`encrypt/decrypt` and control-flow refusal (tested elsewhere: test_api_errors)."""
import jax
import jax.numpy as jnp
import numpy as np

R = np.random.RandomState(16)


def rnd(*shape, m=6.0):
    """CrypTen's get_random_test_tensor(is_float=True): uniform in [-m, m]."""
    return R.uniform(-m, m, shape).astype(np.float32)


def nonzero(*shape, lo=0.5, hi=6.0):
    return (R.choice([-1, 1], shape) * R.uniform(lo, hi, shape)).astype(np.float32)


GRID = (0.01 * np.arange(-1000, 1001)).astype(np.float32)          # [-10, 10]
GRID_NZ = np.where(GRID == 0, 1.0, GRID).astype(np.float32)
GRID_POS = GRID[1001:]                                             # (0, 10]
# index arrays are int32 (JAX's default int): int64 numpy indices make float64 reference runs
# reuse int32-compiled executables and fail inside JAX, not in the compiler
IDX4 = np.array([[[1, 2], [3, 4]], [[4, 2], [1, 3]]], np.int32)    # test_take's index
GIDX = R.randint(0, 5, (5, 5)).astype(np.int32)                    # gather/scatter indices in [0, 4]
AR5 = np.arange(5, dtype=np.int32)
IDX_ADD = np.array([1, 2, 3, 4, 4, 2, 1, 3], np.int32)
KPUB = R.uniform(-6, 6, (1, 1, 3, 3)).astype(np.float32)           # a public (server) kernel
EXPO = R.uniform(-2, 2, GRID_POS.shape).astype(np.float32)         # a public exponent tensor
COEF = np.r_[R.uniform(-1, 1, 4), 0.0].astype(np.float32)          # polynomial, public coefficients


def conv2d(x, k, pad):
    return jax.lax.conv_general_dilated(x, k, (1, 1), [(pad, pad)] * 2)


def conv_transpose2d(x, k, pad):
    # torch's conv_transpose2d(x, k, padding=p) == lax.conv_transpose with the kernel flipped
    # and padding k-1-p on each side
    kh = k.shape[-1]
    return jax.lax.conv_transpose(x, k[:, :, ::-1, ::-1], (1, 1),
                                  [(kh - 1 - pad, kh - 1 - pad)] * 2,
                                  dimension_numbers=("NCHW", "IOHW", "NCHW"))


def pool(x, k, s, p, op):
    """torch avg/sum/max_pool2d on NCHW (avg counts the zero padding, count_include_pad)."""
    win, st, pad = (1, 1, k, k), (1, 1, s, s), ((0, 0), (0, 0), (p, p), (p, p))
    if op == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, win, st, pad)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, win, st, pad)
    return total / (k * k) if op == "avg" else total


def unfold(x, dim, size, step):
    """torch.Tensor.unfold: windows of `size` every `step` along dim, appended as a last axis."""
    n = (x.shape[dim] - size) // step + 1
    idx = (np.arange(n)[:, None] * step + np.arange(size)[None]).astype(np.int32)
    return jnp.moveaxis(jnp.take(x, idx, axis=dim), dim + 1, -1) if dim != x.ndim - 1 \
        else jnp.take(x, idx, axis=dim)


def norms(x):
    out = []
    for dim in (None, 1):   # CrypTen: None, 0, 1, 2 (same rules; fewer keep it fast)
        out += [jnp.sum(jnp.abs(x), axis=dim), jnp.sum(jnp.abs(x) ** 1.5, axis=dim) ** (1 / 1.5),
                jnp.linalg.norm(x.reshape(-1) if dim is None else x, axis=dim),
                jnp.sum(jnp.abs(x) ** 3, axis=dim) ** (1 / 3),
                jnp.max(jnp.abs(x), axis=dim)]
    return tuple(out)


PUB = rnd(5)          # a public second operand (CrypTen's `tensor_type = lambda x: x`)
PUB_DIV = nonzero(5) * 10

# name -> (fn, argument generators, tolerance override or None)
RECORDS = {
    "add": (lambda a, b: (a + b, a + PUB, a + b[:1], 2 + a), (rnd(5), rnd(5)), None),
    "sub": (lambda a, b: (a - b, a - PUB, a - b[:1], 2 - a), (rnd(5), rnd(5)), None),
    "mul": (lambda a, b: (a * b, a * PUB, a * b[:1], 2 * a), (rnd(5), rnd(5)), None),
    "square": (lambda a: jnp.square(a), (rnd(5),), None),
    "div": (lambda a, d: (a / 2, a / 2.0, a / d, a / PUB_DIV), (rnd(5), nonzero(5) * 10), None),
    "sum": (lambda a: (a.sum(), a.sum(0), a.sum(1)), (rnd(10, 10),), None),
    "mean": (lambda a: (a.mean(), a.mean(0), a.mean(1), a.mean(2)), (rnd(5, 4, 3),), None),
    "var": (lambda a: (a.var(ddof=1), a.var(0, ddof=1), a.var(1, ddof=1), a.var(2, ddof=1)),
            (rnd(5, 4, 3),), None),
    "matmul": (lambda v, m: (v @ m, v @ np.asarray(PUB[:, None] * np.ones((1, 3)), np.float32)),
               (rnd(5, m=7), rnd(5, 3, m=7)), None),
    "dot": (lambda a, b: (jnp.dot(a, b), jnp.dot(a, PUB)), (rnd(5), rnd(5)), None),
    "ger": (lambda a, b: (jnp.outer(a, b), jnp.outer(a, PUB)), (rnd(5), rnd(5)), None),
    "unsqueeze_squeeze": (lambda a: (jnp.expand_dims(a, 1), jnp.squeeze(a[None])),
                          (rnd(5, 3),), None),
    "transpose": (lambda a: (a.T, jnp.swapaxes(a, 0, 2), jnp.transpose(a, (1, 0, 2))),
                  (rnd(3, 4, 2),), None),
    "conv2d": (lambda x, k: (conv2d(x, k, 0), conv2d(x, k, 1),
                             conv2d(x, KPUB.astype(x.dtype), 1)),
               (rnd(1, 1, 5, 4), rnd(1, 1, 3, 3)), None),
    "conv_transpose2d": (lambda x, k: conv_transpose2d(x, k, 1),
                         (rnd(1, 1, 5, 4), rnd(1, 1, 3, 3)), None),
    "avg_pool2d": (lambda x: (pool(x, 2, 1, 0, "avg"), pool(x, 3, 2, 1, "avg")),
                   (rnd(1, 4, 5, 4),), None),
    "sum_pool2d": (lambda x: (pool(x, 2, 2, 1, "sum"), pool(x, 3, 1, 0, "sum")),
                   (rnd(1, 4, 5, 4),), None),
    "max_pool2d": (lambda x: (pool(x, 2, 1, 0, "max"), pool(x, 3, 2, 1, "max")),
                   (rnd(1, 4, 5, 4),), None),
    "take": (lambda a: (jnp.take(a, IDX4, axis=0), jnp.take(a, IDX4, axis=3),
                        jnp.take(a.reshape(-1), np.array([0, 5, 10], np.int32))), (rnd(5, 5, 5, 5),), None),
    "neg": (lambda a: -a, (rnd(5, 3),), None),
    "relu": (lambda a: jax.nn.relu(a), (rnd(5, 4) - rnd(5, 4),), None),
    "gt": (lambda a, b: (a > b, a > PUB), (rnd(5), rnd(5)), None),
    "ge": (lambda a, b: (a >= b, a >= PUB), (rnd(5), rnd(5)), None),
    "lt": (lambda a, b: (a < b, a < PUB), (rnd(5), rnd(5)), None),
    "le": (lambda a, b: (a <= b, a <= PUB), (rnd(5), rnd(5)), None),
    "eq": (lambda a, b: (a == b, a == PUB), (np.r_[rnd(3), PUB[3:]], rnd(5)), None),
    "ne": (lambda a, b: (a != b, a != PUB), (np.r_[rnd(3), PUB[3:]], rnd(5)), None),
    "max": (lambda a: (a.max(), a.max(0), a.max(2, keepdims=True)), (rnd(4, 3, 5),), None),
    "min": (lambda a: (a.min(), a.min(0), a.min(2, keepdims=True)), (rnd(4, 3, 5),), None),
    "argmax": (lambda a: (jnp.argmax(a), jnp.argmax(a, 0), jnp.argmax(a, 2)),
               (rnd(4, 3, 5),), None),
    "argmin": (lambda a: (jnp.argmin(a), jnp.argmin(a, 0), jnp.argmin(a, 2)),
               (rnd(4, 3, 5),), None),
    "abs": (lambda a: jnp.abs(a), (rnd(5, 3),), None),
    "sign": (lambda a: jnp.sign(a), (nonzero(5, 3, lo=0.01),), None),
    "exp": (lambda a: jnp.exp(a), (GRID,), None),
    "reciprocal": (lambda a: jnp.reciprocal(a), (GRID_NZ,), None),
    "log": (lambda a: jnp.log(a), (GRID_POS,), None),
    "sqrt": (lambda a: jnp.sqrt(a), (GRID_POS,), None),
    "pos_pow": (lambda a, p: tuple(a ** e for e in (-3, -2, -1, 0, 1, 2, 3))
                + (a ** p, a ** EXPO),
                (GRID_POS, R.uniform(-2, 2, GRID_POS.shape).astype(np.float32)), None),
    "pow": (lambda a: tuple(a ** e for e in (-3, -2, -1, 0, 1, 2, 3)), (nonzero(5),), None),
    "norm": (norms, (rnd(3, 3, 3) / 5,), dict(atol=0.05, rtol=0.5)),
    "sigmoid": (lambda a: jax.nn.sigmoid(a), (GRID,), None),
    "tanh": (lambda a: jnp.tanh(a), (GRID,), None),
    "cos": (lambda a: jnp.cos(a), (GRID,), None),
    "sin": (lambda a: jnp.sin(a), (GRID,), None),
    "softmax": (lambda s, a: (jax.nn.softmax(s, axis=()), jax.nn.softmax(a, 0),
                              jax.nn.softmax(a, 1), jax.nn.softmax(a, 2)),
                (rnd(), rnd(4, 3, 5) / 5), None),
    "getitem_setitem": (lambda a, b: (a[:, 0], a[0, :], a.at[:, 0].set(b), a.at[0, :].set(b),
                                      a.at[0, :].set(PUB[:4])), (rnd(4, 4), rnd(4)), None),
    "pad": (lambda a, v: (jnp.pad(a, ((1, 1), (2, 2)), constant_values=10.0),
                          jnp.pad(a, ((0, 1), (1, 0)), constant_values=v)),
            (rnd(5, 5), rnd()), None),
    "index_add": (lambda a, b: (a.at[:, IDX_ADD].add(b),
                                a.at[IDX_ADD].add(b.T)),
                  (rnd(5, 5), rnd(5, 8)), None),
    "scatter": (lambda a, b: (a.at[GIDX, AR5[None]].set(b[0:1].repeat(5, 0)),
                              a.at[AR5[:, None], GIDX].set(b)),
                (rnd(5, 5), np.tile(rnd(1, 5), (5, 1))), None),
    "scatter_add": (lambda a, b: (a.at[GIDX, AR5[None]].add(b),
                                  a.at[AR5[:, None], GIDX].add(b)),
                    (rnd(5, 5), rnd(5, 5)), None),
    "broadcast_arithmetic": (lambda a, b: (a + b, a - b, a * b, a / (b * 10 + jnp.sign(b))),
                             (rnd(2, 1, 2), nonzero(1, 2, 1, 1)), None),
    "broadcast_matmul": (lambda a, b: (a @ b, a @ np.asarray(PUB[:2].reshape(1, 2, 1)
                                                             * np.ones((2, 2, 5)), np.float32)),
                         (rnd(5, 1, 5, 2), rnd(2, 2, 5)), None),
    "index_select": (lambda a: (jnp.take(a, np.array([0, 2, 4], np.int32), axis=0),
                                jnp.take(a, np.array([0, 3], np.int32), axis=1)), (rnd(5, 10, 3),), None),
    "narrow": (lambda a: (jax.lax.slice_in_dim(a, 1, 4, axis=0),
                          jax.lax.slice_in_dim(a, 2, 3, axis=2)), (rnd(5, 6, 7),), None),
    "repeat_expand": (lambda a: (jnp.tile(a, (4, 2, 1)), jnp.broadcast_to(a, (4, 5, 8))),
                      (rnd(1, 8),), None),
    "view_flatten": (lambda a: (a.reshape(-1), a.reshape(5, 20), a.reshape(-1, 10),
                                a.reshape(2, -1)), (rnd(2, 5, 10),), None),
    "roll": (lambda a: (jnp.roll(a, 1, 0), jnp.roll(a, 3, 1), jnp.roll(a, (2, 1), (0, 1))),
             (rnd(5, 10, 3),), None),
    "unfold": (lambda a: (unfold(a, 0, 3, 2), unfold(a, 2, 2, 1)), (rnd(6, 4, 5),), None),
    "cumsum": (lambda a: (jnp.cumsum(a, 0), jnp.cumsum(a, 1), jnp.cumsum(a, 2)),
               (rnd(6, 5, 4),), None),
    "trace": (lambda a, b: (jnp.trace(a), jnp.trace(b)), (rnd(3, 3), rnd(2, 3)), None),
    "flip": (lambda a: (jnp.flip(a, 0), jnp.flip(a, (0, 1)), jnp.flip(a, (0, 1, 2))),
             (rnd(5, 4, 3),), None),
    "where": (lambda a, b, c: (jnp.where(np.arange(10).reshape(2, 5) % 3 == 0, a, b),
                               jnp.where(c > 0, a, b), jnp.where(c > 0, a, PUB[0]),
                               jnp.where(np.arange(10).reshape(2, 5) % 2 == 0, a, PUB)),
              (rnd(2, 5), rnd(2, 5), nonzero(2, 5)), None),
    "unbind_split": (lambda a: (*[a[:, i] for i in range(a.shape[1])],
                                *jnp.split(a, [2], axis=0), *jnp.split(a, 5, axis=2)),
                     (rnd(5, 3, 5),), None),
    "polynomial": (lambda a, c: (jnp.polyval(COEF, a),
                                 jnp.polyval(jnp.r_[c, 0.0], a)),
                   (rnd(5, m=2), rnd(4, m=1)), None),
    "gather": (lambda a: (jnp.take_along_axis(a, GIDX, 0), jnp.take_along_axis(a, GIDX, 1)),
               (rnd(5, 5),), None),
    "dropout_eval": (lambda a: a, (nonzero(5, 10),), None),   # flax Dropout(deterministic=True)
}
