"""One training step (forward, cross-entropy, backward, Adam update) of U-Net and SegNet in segjax and
in a PyTorch implementation of the same architecture, timed side by side in one run.

    python experiments/benchmarks/train_step.py                      # 64, 128, 256 px, both networks
    python experiments/benchmarks/train_step.py --sizes 128 --steps 5

The networks are segjax's `unet` and `segnet` with preset 'paper', base width 32, depth 4 (levels), batch
norm, U-Net's bottom dropout 0.5 and each paper's decoder (U-Net: 2x2 transposed conv; SegNet: max
unpooling with the pooling indices); the PyTorch modules below mirror them layer for layer (the script
checks that the parameter counts agree). Timings are interleaved (torch, segjax, torch, ...) so that load
from other processes hits both; the medians are reported as images/s, and the ratio segjax / torch is the
median over rounds of each round's ratio.
Also printed: segjax's compile time (lower + compile of the jitted step) and the XLA buffer sizes of the
compiled step (arguments + outputs + temporaries, a proxy of peak memory), plus the process's max RSS.
GFLOP/s is XLA's flop count of segjax's step (the same arithmetic as torch's; `segjax.summary.program_flops`)
over each side's median step time; '% peak' divides it by an estimate of the CPUs' float32 peak: cores x clock
(the nominal clock /proc/cpuinfo reports, which a VM does not update; boost clocks are higher) x 2 FMA units x 16
lanes (AVX-512; 8 with AVX2) x 2 flops per FMA. (AMD Zen 4 runs AVX-512 on 256-bit units: its real peak is half.)
"""

import argparse
import os
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from torch import nn as tnn
from torch.nn import functional as F

from segjax import cli, models, summary

# ----------------------------------------------------------------------------------------------------
# PyTorch mirrors of segjax's networks (BN conv blocks without conv bias, like segjax with norm='batch').
# ----------------------------------------------------------------------------------------------------


def conv_block(cin, widths):
    layers = []
    for w in widths:
        layers += [tnn.Conv2d(cin, w, 3, padding=1, bias=False), tnn.BatchNorm2d(w, momentum=0.1), tnn.ReLU()]
        cin = w
    return tnn.Sequential(*layers)


class TorchUNet(tnn.Module):
    def __init__(self, num_classes, base, depth, dropout=0.5):
        super().__init__()
        w = [base * 2**lvl for lvl in range(depth + 1)]
        self.down = tnn.ModuleList(
            [conv_block(3 if lvl == 0 else w[lvl - 1], (w[lvl], w[lvl])) for lvl in range(depth)]
        )
        self.bottom = conv_block(w[depth - 1], (w[depth], w[depth]))
        self.drop = tnn.Dropout(dropout)
        self.up = tnn.ModuleList([tnn.ConvTranspose2d(w[lvl + 1], w[lvl], 2, stride=2) for lvl in range(depth)])
        self.upblock = tnn.ModuleList([conv_block(2 * w[lvl], (w[lvl], w[lvl])) for lvl in range(depth)])
        self.classifier = tnn.Conv2d(w[0], num_classes, 1)

    def forward(self, x):
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.drop(self.bottom(x))
        for lvl in reversed(range(len(self.down))):
            x = self.upblock[lvl](torch.cat([skips[lvl], self.up[lvl](x)], 1))
        return self.classifier(x)


class TorchSegNet(tnn.Module):
    def __init__(self, num_classes, base, depth, convs):
        super().__init__()
        w = [base * 2 ** min(lvl, 3) for lvl in range(depth)]
        self.enc = tnn.ModuleList(
            [conv_block(3 if lvl == 0 else w[lvl - 1], (w[lvl],) * convs[lvl]) for lvl in range(depth)]
        )
        self.dec = tnn.ModuleList(
            [conv_block(w[lvl], (w[lvl],) * (convs[lvl] - 1) + (w[max(lvl - 1, 0)],)) for lvl in range(depth)]
        )
        self.classifier = tnn.Conv2d(w[0], num_classes, 1)

    def forward(self, x):
        pooled = []
        for block in self.enc:
            x = block(x)
            size = x.shape[-2:]
            x, idx = F.max_pool2d(x, 2, return_indices=True)
            pooled.append((idx, size))
        for lvl in reversed(range(len(self.enc))):
            idx, size = pooled[lvl]
            x = self.dec[lvl](F.max_unpool2d(x, idx, 2, output_size=size))
        return self.classifier(x)


def model_configs(base, depth):
    unet = dict(name="unet", preset="paper", base_width=base, depth=depth, norm="batch")
    segnet = dict(name="segnet", preset="paper", base_width=base, depth=depth, norm="batch")
    return {"unet": unet, "segnet": segnet}


def torch_model(name, cfg, num_classes):
    if name == "unet":
        return TorchUNet(num_classes, cfg["base_width"], cfg["depth"])
    convs = models.PRESETS["segnet"]["paper"]["convs"]
    return TorchSegNet(
        num_classes, cfg["base_width"], cfg["depth"], [convs[lvl % len(convs)] for lvl in range(cfg["depth"])]
    )


# ----------------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------------


def make_segjax_step(model, tx):
    def loss_fn(params, batch_stats, images, labels, key):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            rngs={"dropout": key},
            mutable=["batch_stats"],
        )
        # One-hot form: the gradient of take_along_axis is a scatter that XLA tries to constant-fold.
        onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        loss = optax.softmax_cross_entropy(logits, onehot).mean()
        return loss, updates["batch_stats"]

    def step(params, batch_stats, opt_state, images, labels, key):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, images, labels, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1, 2))


def cpu_peak_gflops() -> tuple[float, str]:
    """Estimated float32 peak (GFLOP/s) of the CPUs this process may run on, and how it was estimated."""
    cores = len(os.sched_getaffinity(0))
    with open("/proc/cpuinfo") as f:
        info = f.read()
    mhz = max((float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")), default=0.0)
    lanes = 16 if " avx512f " in info else 8
    peak = cores * mhz / 1e3 * 2 * lanes * 2
    return (
        peak,
        f"{cores} cores x {mhz / 1e3:.2f} GHz x 2 FMA x {lanes} lanes x 2 flops = {peak:.0f} GFLOP/s (estimate)",
    )


def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def bench_one(name, cfg, size, batch, num_classes, steps, rounds):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, num_classes, (batch, size, size)).astype(np.int32)

    model = models.create_model(cfg, num_classes)
    variables = model.init({"params": jax.random.key(0)}, jnp.asarray(images[:1]), train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    step = make_segjax_step(model, tx)
    key = jax.random.key(1)
    args = (params, batch_stats, opt_state, jnp.asarray(images), jnp.asarray(labels), key)
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = step.lower(*args)
    compiled = lowered.compile()
    compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    flops = summary.program_flops(lowered, compiled)
    mem = compiled.memory_analysis()
    xla_mb = (
        (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) / 2**20
        if mem is not None
        else float("nan")
    )

    tmodel = torch_model(name, cfg, num_classes)
    n_torch = sum(p.numel() for p in tmodel.parameters())
    n_jax = count(params)
    if n_torch != n_jax:
        raise RuntimeError(f"{name}: parameter counts differ: segjax {n_jax}, torch {n_torch}")
    topt = torch.optim.Adam(tmodel.parameters(), 1e-3)
    timages = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    tlabels = torch.from_numpy(labels).long()

    def torch_step():
        topt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(tmodel(timages), tlabels)
        loss.backward()
        topt.step()
        return loss.item()

    state = list(args[:3])

    def jax_step():
        p, b, o, loss = compiled(state[0], state[1], state[2], args[3], args[4], key)
        loss.block_until_ready()
        state[:] = [p, b, o]

    torch_step(), jax_step()  # warm-up
    t_torch, t_jax = [], []
    for _ in range(rounds):
        for fn, times in ((torch_step, t_torch), (jax_step, t_jax)):
            t = time.perf_counter()
            for _ in range(steps):
                fn()
            times.append((time.perf_counter() - t) / steps)
    torch_ips = batch / statistics.median(t_torch)
    jax_ips = batch / statistics.median(t_jax)
    torch_gflops = flops / statistics.median(t_torch) / 1e9
    jax_gflops = flops / statistics.median(t_jax) / 1e9
    # The ratio is the median of the rounds' own ratios: each pairs runs seconds apart, so a slow spell of
    # the (shared, virtual) machine cancels out instead of landing on one side's median.
    ratio = statistics.median(t / j for t, j in zip(t_torch, t_jax, strict=True))
    return dict(
        model=name,
        size=size,
        params=n_jax,
        torch_ips=torch_ips,
        jax_ips=jax_ips,
        ratio=ratio,
        torch_gflops=torch_gflops,
        jax_gflops=jax_gflops,
        compile_s=compile_s,
        compile_cpu_s=compile_cpu_s,
        xla_mb=xla_mb,
    )


def main():
    cli.use_fast_cpu_kernels()  # before the first JAX computation
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="unet,segnet")
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--base", type=int, default=32)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    cfgs = model_configs(args.base, args.depth)
    peak, peak_note = cpu_peak_gflops()
    print(
        f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); batch {args.batch}, base width {args.base}, "
        f"depth {args.depth}, {args.classes} classes"
    )
    print(f"peak: {peak_note}")
    header = (
        f"{'model':8} {'size':>5} {'params':>10} {'torch img/s':>12} {'segjax img/s':>13} {'ratio':>6} "
        f"{'torch GF/s':>10} {'%peak':>6} {'segjax GF/s':>11} {'%peak':>6} "
        f"{'compile s':>10} {'(CPU s)':>8} {'XLA MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            r = bench_one(name, cfgs[name], size, args.batch, args.classes, args.steps, args.rounds)
            print(
                f"{r['model']:8} {r['size']:>5} {r['params']:>10,} {r['torch_ips']:>12.2f} "
                f"{r['jax_ips']:>13.2f} {r['ratio']:>6.2f} {r['torch_gflops']:>10.1f} "
                f"{100 * r['torch_gflops'] / peak:>6.1f} {r['jax_gflops']:>11.1f} {100 * r['jax_gflops'] / peak:>6.1f} "
                f"{r['compile_s']:>10.2f} {r['compile_cpu_s']:>8.2f} "
                f"{r['xla_mb']:>8.0f}",
                flush=True,
            )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process max RSS (torch and segjax together): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
