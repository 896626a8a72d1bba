"""`segjax-models`: a table of the networks with their parameter count, GFLOPs (XLA's cost analysis of
the compiled forward pass) and the working memory XLA plans for it, at a given input size and upsampling method.

    segjax-models                                   # every model, preset small, 128x128, paper decoders
    segjax-models --preset paper --size 224 --method bilinear --models unet,segnet
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from segjax import cli, ops
from segjax.models import MODELS, create_model, default_model_config


def count_params(params) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def describe(
    name: str,
    *,
    preset: str = "small",
    size=(128, 128),
    method: str | None = None,
    num_classes: int = 21,
    base_width: int | None = None,
    depth: int | None = None,
    norm: str = "batch",
    batch: int = 1,
) -> dict:
    """`measure` of one configured network, with its name and upsampling method."""
    cfg = default_model_config()
    cfg.update(name=name, preset=preset, base_width=base_width, depth=depth, norm=norm)
    cfg.upsample.method = method
    model = create_model(cfg, num_classes)
    return dict(model=name, method=model.upsample.method, **measure(model, size, batch))


def program_flops(lowered, compiled) -> float:
    """XLA's flop count of the compiled program (nan when the backend gives none); of the program before
    compilation where it holds oneDNN convolution calls (SEGJAX_XLA_CPU_ONEDNN=1), which XLA counts as no flops."""
    cost = lowered.cost_analysis() if "__onednn$" in compiled.as_text() else compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", math.nan))


def measure(model, size, batch: int = 1) -> dict:
    """Parameter count, forward GFLOPs (per image, eval mode) and the working memory XLA plans for the forward pass
    (`memory_analysis().temp_size_in_bytes`, for the whole batch) of a network, on `batch` images of `size`."""
    shape = jax.ShapeDtypeStruct((batch, *size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x), shape)
    lowered = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, shape)
    compiled = lowered.compile()
    memory = compiled.memory_analysis()
    return dict(
        params=count_params(variables["params"]),
        gflops=program_flops(lowered, compiled) / batch / 1e9,
        temp_mib=math.nan if memory is None else memory.temp_size_in_bytes / 2**20,
    )


def format_table(rows) -> str:
    header = f"{'model':20} {'upsample':14} {'params':>14} {'GFLOPs':>9} {'temp MiB':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:20} {r['method']:14} {'-':>14} {'-':>9} {'-':>9}  ({r['error']})")
        else:
            lines.append(
                f"{r['model']:20} {r['method']:14} {r['params']:>14,} {r['gflops']:>9.3f} {r['temp_mib']:>9.1f}"
            )
    return "\n".join(lines)


def run(argv=None) -> list[dict]:
    """Parses the command line, prints the table and returns its rows."""
    parser = cli.ArgumentParser(
        prog="segjax-models",
        description="Parameter count, GFLOPs (XLA cost analysis, forward pass per image) and XLA working memory.",
    )
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--preset", default="small", choices=("small", "paper"))
    parser.add_argument("--size", default="128", help="input size: N or HxW (any size; padded inside)")
    parser.add_argument(
        "--method", default=None, choices=ops.METHODS, help="upsampling method (default: each paper's decoder)"
    )
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--base-width", type=int, default=None)
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--norm", default="batch", choices=("none", "batch", "group"))
    args = parser.parse_args(argv)
    try:
        h, w = (int(v) for v in args.size.lower().split("x")) if "x" in args.size.lower() else (int(args.size),) * 2
    except ValueError:
        parser.error(f"--size must be N or HxW, got {args.size!r}")
    if h < 1 or w < 1:
        parser.error(f"--size must be positive, got {args.size!r} (e.g. --size 128 or --size 96x128)")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; valid: {', '.join(MODELS)}")
    rows = []
    print(f"input {h}x{w}, preset {args.preset}, {args.num_classes} classes, norm {args.norm}")
    for name in names:
        try:
            depth = args.depth if not name.startswith("fcn") else None
            rows.append(
                describe(
                    name,
                    preset=args.preset,
                    size=(h, w),
                    method=args.method,
                    num_classes=args.num_classes,
                    base_width=args.base_width,
                    depth=depth,
                    norm=args.norm,
                )
            )
        except ValueError as e:  # an impossible model/method pair: say why, keep the table
            rows.append(
                dict(
                    model=name,
                    method=args.method or "-",
                    error=str(e).split(":")[1].strip() if ":" in str(e) else str(e),
                )
            )
    print(format_table(rows))
    return rows


def main(argv=None) -> None:
    """Entry point of `segjax-models` (returns None: a console script's return value is its exit status)."""
    try:
        run(argv)
    except ValueError as e:
        cli.fail("segjax-models", str(e))


if __name__ == "__main__":
    main()
