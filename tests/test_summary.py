"""segjax.summary (segjax-models): the table of parameters, FLOPs and working memory."""

import jax
import jax.numpy as jnp

from segjax import models, summary


def test_summary_table_counts_params_and_flops(capsys):
    rows = summary.run(
        [
            "--models",
            "unet,fcn32s",
            "--size",
            "17x21",
            "--base-width",
            "2",
            "--depth",
            "2",
            "--norm",
            "none",
            "--num-classes",
            "5",
            "--method",
            "max_unpool",
        ]
    )
    out = capsys.readouterr().out
    unet, fcn = rows
    assert unet["params"] == summary.count_params(_params("unet", 2, 2, 5, "max_unpool"))
    # FLOPs of the convolutions alone (multiply-adds x 2) at the padded size 20x24 bound XLA's count below.
    assert unet["gflops"] * 1e9 > 2 * 20 * 24 * 9 * 3 * 2
    assert unet["temp_mib"] * 2**20 >= 20 * 24 * 2 * 4  # at least one first-level feature map is live
    assert "error" in fcn and "max_unpool" in fcn["error"]
    assert "unet" in out and "fcn32s" in out and f"{unet['params']:,}" in out


def _params(name, base_width, depth, num_classes, method):
    config = models.default_model_config()
    config.update(name=name, base_width=base_width, depth=depth, norm="none")
    config.upsample.method = method
    model = models.create_model(config, num_classes)
    return model.init(jax.random.PRNGKey(0), jnp.zeros((1, 20, 24, 3)), train=False)["params"]
