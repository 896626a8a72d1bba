"""Speed of the segjax upsampling operators (and the networks' batch norm) beside their stock JAX/Flax
counterparts and PyTorch.

For each operator and shape (batch 8; 128x128x32 and 64x64x64 by default; the conv groups are also run at
32x32x128) it times the forward pass and
forward+backward (gradients of every float input) of: segjax, the stock JAX/Flax way to get the same
numbers, and PyTorch's native CPU op (when torch is installed). Times are medians over repeats after
warm-up, jitted and block_until_ready'd. Ratios > 1 mean segjax is faster.

    python experiments/benchmarks/ops.py [--batch 8] [--repeats 7] [--only conv_transpose,pool_unpool]
    python experiments/benchmarks/ops.py --only conv_kernel_grad,conv --shapes 128x128x32,64x64x64,32x32x128

XLA:CPU flags are read from XLA_FLAGS as usual (segjax adds those of `segjax.cli.FAST_CPU_FLAGS` that are on).
"""

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

from segjax import cli, ops
from segjax.models import layers

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the table then has no PyTorch columns
    torch = None

DN = ("NHWC", "HWIO", "NHWC")


def _median_seconds(run, repeats):
    run()
    run()  # warm-up: compile / allocate
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_jax(fn, args, repeats, backward):
    """Median seconds of jit(fn)(*args); with `backward`, of the output plus the gradients of every
    float arg for a fixed random output cotangent (passed in, so XLA cannot fold the backward pass)."""
    if backward:
        float_args = tuple(i for i, a in enumerate(args) if jnp.issubdtype(a.dtype, jnp.floating))
        out = jax.eval_shape(fn, *args)
        cotangent = jnp.asarray(np.random.default_rng(1).normal(size=out.shape), out.dtype)

        def fwd_bwd(cotangent, *args):
            def of_floats(*floats):
                full = list(args)
                for i, a in zip(float_args, floats, strict=True):
                    full[i] = a
                return fn(*full)

            y, vjp = jax.vjp(of_floats, *(args[i] for i in float_args))
            return y, vjp(cotangent)

        step = jax.jit(fwd_bwd)

        def run():
            return jax.block_until_ready(step(cotangent, *args))
    else:
        fwd = jax.jit(fn)

        def run():
            return jax.block_until_ready(fwd(*args))

    return _median_seconds(run, repeats)


def time_torch(fn, args, repeats, backward):
    """Median seconds of fn(*args) in PyTorch eager; with `backward`, also y.backward(cotangent)."""
    cotangent = None
    if backward:
        with torch.no_grad():
            shape = fn(*args).shape
        cotangent = torch.from_numpy(np.random.default_rng(1).normal(size=shape).astype(np.float32))

    def run():
        if backward:
            for a in args:
                a.grad = None
            fn(*args).backward(cotangent)
        else:
            with torch.no_grad():
                fn(*args)

    return _median_seconds(run, repeats)


def torch_args(jax_args, requires_grad):
    out = []
    for i, a in enumerate(jax_args):
        a = np.asarray(a)
        if i == 0 or a.shape == np.shape(jax_args[0]):  # the image (or an image-shaped cotangent): NHWC -> NCHW
            t = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
        elif a.ndim == 4:  # HWIO kernel -> torch's (in, out, kh, kw) for conv_transpose2d
            t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 3, 0, 1)))
        else:
            t = torch.from_numpy(a)
        out.append(t.requires_grad_(requires_grad and t.is_floating_point()))
    return out


# ---------------------------------------------------------------------------------- the cases
def conv_transpose_cases(x, k):
    """Transposed conv, stride 2, SAME, C -> C/2 channels: segjax vs nn.ConvTranspose vs lax vs torch."""
    c = x.shape[-1]
    kernel = jnp.asarray(np.random.default_rng(k).normal(size=(k, k, c, c // 2)) / (k * np.sqrt(c)), jnp.float32)
    flax_layer = nn.ConvTranspose(c // 2, (k, k), (2, 2), padding="SAME", use_bias=False)
    stock = {
        "nn.ConvTranspose": lambda x, w: flax_layer.apply({"params": {"kernel": w}}, x),
        "lax.conv_transpose": lambda x, w: lax.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=DN),
    }
    # torch padding / output_padding giving the same 2H x 2W output as SAME.
    pad, out_pad = {2: (0, 0), 3: (1, 1), 4: (1, 0)}[k]

    def torch_fn(x, w):
        return F.conv_transpose2d(x, w, stride=2, padding=pad, output_padding=out_pad)

    return (
        f"conv_transpose k={k} s=2",
        lambda x, w: ops.conv_transpose(x, w, 2, "SAME"),
        stock,
        "F.conv_transpose2d",
        torch_fn,
        (x, kernel),
    )


def conv_case(x):
    """3x3 stride-1 SAME conv, C -> C channels, as the networks' conv blocks: segjax (layers.conv2d, i.e.
    lax.conv_general_dilated) vs flax's nn.Conv vs torch."""
    c = x.shape[-1]
    kernel = jnp.asarray(np.random.default_rng(3).normal(size=(3, 3, c, c)) / (3 * np.sqrt(c)), jnp.float32)
    flax_conv = nn.Conv(c, (3, 3), padding="SAME", use_bias=False)
    stock = {"nn.Conv": lambda x, w: flax_conv.apply({"params": {"kernel": w}}, x)}

    def torch_fn(x, w):  # torch_args gives the kernel as (in, out, kh, kw)
        return F.conv2d(x, w.transpose(0, 1), padding=1)

    return ("conv 3x3 s=1", layers.conv2d, stock, "F.conv2d", torch_fn, (x, kernel))


def _kernel_grad(conv):
    """(x, w, g) -> the gradient of <conv(x, w), g> with respect to w."""
    return lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]


def _transposed_kernel_grad(x, w, g):
    """The kernel gradient spelled as a convolution with batch as the contracted feature dimension (what
    lax's rule emits): lhs x as (C, H, W, N), rhs g as an H x W kernel with N in, Cout out."""
    kh, kw = w.shape[:2]
    pads = ((kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2))  # the forward's SAME padding at stride 1
    return lax.conv_general_dilated(x, g, (1, 1), pads, dimension_numbers=("CHWN", "IHWO", "HWNC"))


def _same_padded(x, kh, kw):
    return jnp.pad(x, ((0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))


def _slice_patches_kernel_grad(x, w, g):
    """Patches as kh*kw shifted slices of the padded input concatenated (features in HWI order, no
    transpose after), then one dot contracting N, H, W with g."""
    kh, kw, ci, co = w.shape
    n, h, wd, _ = x.shape
    xp = _same_padded(x, kh, kw)
    p = jnp.concatenate([xp[:, i : i + h, j : j + wd] for i in range(kh) for j in range(kw)], axis=-1)
    return lax.dot_general(p, g, (((0, 1, 2), (0, 1, 2)), ((), ()))).reshape(kh, kw, ci, co)


def _lax_patches_kernel_grad(x, w, g):
    """Patches from lax.conv_general_dilated_patches (features in (C, kh, kw) order), one dot, transpose."""
    kh, kw, ci, co = w.shape
    p = lax.conv_general_dilated_patches(x, (kh, kw), (1, 1), "SAME", dimension_numbers=DN)
    d = lax.dot_general(p, g, (((0, 1, 2), (0, 1, 2)), ((), ())))
    return d.reshape(ci, kh, kw, co).transpose(1, 2, 0, 3)


def _per_tap_kernel_grad(x, w, g):
    """One skinny dot per kernel tap (kh*kw products of (C, NHW) x (NHW, Cout)), no patch array."""
    kh, kw, ci, co = w.shape
    n, h, wd, _ = x.shape
    xp = _same_padded(x, kh, kw)
    taps = [
        lax.dot_general(xp[:, i : i + h, j : j + wd], g, (((0, 1, 2), (0, 1, 2)), ((), ())))
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(taps).reshape(kh, kw, ci, co)


def conv_kernel_grad_case(x):
    """Only the kernel gradient of a 3x3 stride-1 SAME conv (issue 25), for a fixed output gradient g:
    segjax's (lax's rule, i.e. XLA's convolution with batch as the contracted feature) vs other spellings of
    the same numbers, and torch's conv2d_weight. The 'fwd' column times this function ('fwd+bwd' is skipped).
    Measured on 2 AVX-512 cores: none of the spellings beats lax's rule (the patch matmuls run at 15-70
    GFLOP/s, XLA's convolution at 60-190), so segjax keeps it."""
    c = x.shape[-1]
    rng = np.random.default_rng(4)
    kernel = jnp.asarray(rng.normal(size=(3, 3, c, c)) / (3 * np.sqrt(c)), jnp.float32)
    g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    stock = {
        "transposed conv CHWN": _transposed_kernel_grad,
        "slice patches + dot": _slice_patches_kernel_grad,
        "lax patches + dot": _lax_patches_kernel_grad,
        "per-tap dots": _per_tap_kernel_grad,
    }

    def torch_fn(x, w, g):
        # torch_args made w (in, out, kh, kw); torch's kernel is (out, in, kh, kw).
        return torch.nn.grad.conv2d_weight(x, w.transpose(0, 1).shape, g, padding=1)

    return ("conv 3x3 kernel grad", _kernel_grad(layers.conv2d), stock, "conv2d_weight", torch_fn, (x, kernel, g))


def _stock_pool_with_indices(x):
    """Stock pooling: nn.max_pool values (select-and-scatter gradient) + argmax indices."""
    n, h, w, c = x.shape
    values = nn.max_pool(x, (2, 2), (2, 2))
    cells = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)
    arg = jnp.argmax(cells, axis=-1).astype(jnp.int32)
    rows = jnp.arange(h // 2)[:, None] * 2 * w + jnp.arange(w // 2)[None, :] * 2
    return values, rows[None, :, :, None] + (arg // 2) * w + arg % 2


def _stock_unpool(values, indices, size):
    n, _, _, c = values.shape
    out = jnp.zeros((n, size[0] * size[1], c), values.dtype)
    out = out.at[jnp.arange(n)[:, None, None], indices.reshape(n, -1, c), jnp.arange(c)[None, None, :]].set(
        values.reshape(n, -1, c)
    )
    return out.reshape(n, size[0], size[1], c)


def pool_unpool_case(x):
    size = x.shape[1:3]

    def segjax_fn(x):
        return ops.max_unpool(*ops.max_pool_with_indices(x), size)

    stock = {"nn.max_pool+scatter": lambda x: _stock_unpool(*_stock_pool_with_indices(x), size)}

    def torch_fn(x):
        v, i = F.max_pool2d(x, 2, 2, return_indices=True)
        return F.max_unpool2d(v, i, 2, 2, output_size=size)

    return ("max_pool_with_indices+max_unpool", segjax_fn, stock, "max_pool2d+max_unpool2d", torch_fn, (x,))


def pool_case(x):
    return (
        "max_pool_with_indices",
        lambda x: ops.max_pool_with_indices(x)[0],
        {"nn.max_pool": lambda x: nn.max_pool(x, (2, 2), (2, 2))},
        "max_pool2d(indices)",
        lambda x: F.max_pool2d(x, 2, 2, return_indices=True)[0],
        (x,),
    )


def resize_case(x, method):
    n, h, w, c = x.shape
    fn = {"nearest": ops.nearest_upsample, "bilinear": ops.bilinear_upsample}[method]
    stock = {"jax.image.resize": lambda x: jax.image.resize(x, (n, 2 * h, 2 * w, c), method)}
    kwargs = dict(align_corners=False) if method == "bilinear" else {}

    def torch_fn(x):
        return F.interpolate(x, scale_factor=2, mode=method, **kwargs)

    return (f"{method}_upsample x2", lambda x: fn(x, 2), stock, "F.interpolate", torch_fn, (x,))


def bed_of_nails_case(x):
    def stock(x):
        n, h, w, c = x.shape
        return jnp.zeros((n, 2 * h, 2 * w, c), x.dtype).at[:, ::2, ::2, :].set(x)

    def torch_fn(x):
        y = x.new_zeros(x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3])
        y[:, :, ::2, ::2] = x
        return y

    return (
        "bed_of_nails x2",
        lambda x: ops.bed_of_nails(x, 2),
        {"zeros().at[::2,::2].set": stock},
        "zeros + slice assign",
        torch_fn,
        (x,),
    )


def pixel_shuffle_case(x):
    def stock(x):  # the same permutation spelled with einops-style reshape through NCHW
        n, h, w, c = x.shape
        y = x.transpose(0, 3, 1, 2).reshape(n, c // 4, 2, 2, h, w).transpose(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c // 4, 2 * h, 2 * w).transpose(0, 2, 3, 1)

    return (
        "pixel_shuffle x2",
        lambda x: ops.pixel_shuffle(x, 2),
        {"NCHW reshape": stock},
        "F.pixel_shuffle",
        lambda x: F.pixel_shuffle(x, 2),
        (x,),
    )


def batch_norm_case(x):
    """Training-mode batch norm + ReLU, as in every conv block of the networks."""
    c = x.shape[-1]
    scale = jnp.asarray(np.random.default_rng(2).uniform(0.5, 2, c), jnp.float32)
    bias = jnp.asarray(np.random.default_rng(3).normal(size=c), jnp.float32)
    flax_bn = nn.BatchNorm(use_running_average=False)
    stats = {"mean": jnp.zeros(c), "var": jnp.ones(c)}

    def stock(x, scale, bias):
        y, _ = flax_bn.apply(
            {"params": {"scale": scale, "bias": bias}, "batch_stats": stats}, x, mutable=["batch_stats"]
        )
        return jax.nn.relu(y)

    def torch_fn(x, scale, bias):
        return F.relu(F.batch_norm(x, None, None, scale, bias, training=True))

    return (
        "batch_norm+relu (train)",
        lambda x, scale, bias: jax.nn.relu(layers.batch_norm_train(x, scale, bias)[0]),
        {"nn.BatchNorm": stock},
        "F.batch_norm",
        torch_fn,
        (x, scale, bias),
    )


CASES = {
    "conv_transpose": lambda x: [conv_transpose_cases(x, k) for k in (2, 3, 4)],
    "pool_unpool": lambda x: [pool_unpool_case(x), pool_case(x)],
    "resize": lambda x: [resize_case(x, "nearest"), resize_case(x, "bilinear"), bed_of_nails_case(x)],
    "pixel_shuffle": lambda x: [pixel_shuffle_case(x)],
    "batch_norm": lambda x: [batch_norm_case(x)],
    "conv": lambda x: [conv_case(x)],
    "conv_kernel_grad": lambda x: [conv_kernel_grad_case(x)],
}
FORWARD_ONLY = {"conv_kernel_grad"}  # cases whose function is itself a gradient


def main():
    cli.use_fast_cpu_kernels()  # before the first JAX computation
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--shapes", default="128x128x32,64x64x64", help="HxWxC, comma separated")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    args = parser.parse_args()

    threads = len(os.sched_getaffinity(0))
    if torch is not None:
        torch.set_num_threads(threads)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"torch {torch.__version__ if torch else 'not installed'} ({threads} threads); "
        f"median of {args.repeats}; ratio = other / segjax (> 1: segjax faster)"
    )
    header = f"{'op':34s} {'shape':12s} {'pass':8s} {'segjax ms':>10s}  {'stock':24s} {'ms':>9s} {'ratio':>6s}"
    if torch is not None:
        header += f"  {'torch':22s} {'ms':>9s} {'ratio':>6s}"
    print(header)
    for shape in args.shapes.split(","):
        h, w, c = (int(v) for v in shape.split("x"))
        x = jnp.asarray(np.random.default_rng(0).normal(size=(args.batch, h, w, c)), jnp.float32)
        for group in args.only.split(","):
            if group not in CASES:
                raise ValueError(f"--only: unknown group {group!r}; valid: {', '.join(CASES)}")
            for name, fn, stock, torch_name, torch_fn, fn_args in CASES[group](x):
                for backward in (False,) if group in FORWARD_ONLY else (False, True):
                    ours = time_jax(fn, fn_args, args.repeats, backward)
                    tail = ""
                    if torch is not None:
                        t = time_torch(torch_fn, torch_args(fn_args, backward), args.repeats, backward)
                        tail = f"  {torch_name:22s} {t * 1e3:9.2f} {t / ours:6.2f}"
                    for i, (stock_name, stock_fn) in enumerate(stock.items()):
                        s = time_jax(stock_fn, fn_args, args.repeats, backward)
                        lead = (
                            f"{name:34s} {f'{args.batch}x{shape}':12s} {'fwd+bwd' if backward else 'fwd':8s} "
                            f"{ours * 1e3:10.2f}"
                            if i == 0
                            else " " * 66
                        )
                        print(
                            f"{lead}  {stock_name:24s} {s * 1e3:9.2f} {s / ours:6.2f}" + (tail if i == 0 else ""),
                            flush=True,
                        )


if __name__ == "__main__":
    main()
