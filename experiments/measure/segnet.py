"""SegNet's study measurement: Table 1's decoders' inference memory at the paper's width (no training needed)."""

from __future__ import annotations

from experiments.studies.segnet import CAMVID_CLASSES, CAMVID_SIZE, MEMORY_NETWORKS
from segjax.models import basic, create_model, default_model_config
from segjax.summary import measure as model_memory


def decoder_memory_rows() -> list[dict]:
    """Table 1's four networks at the paper's width on one CamVid image: parameters, what the decoder keeps from the
    encoder (`basic.decoder_storage_bytes`) and the working memory XLA plans for inference (`summary.describe`)."""
    rows = []
    for label in MEMORY_NETWORKS:
        config = default_model_config()
        config.update(name=label, preset="paper")
        model = create_model(config, CAMVID_CLASSES)
        rows.append(
            {"model": label, **model_memory(model, CAMVID_SIZE), **basic.decoder_storage_bytes(model, *CAMVID_SIZE)}
        )
    return rows


def measure(out, runs, previous: dict | None) -> dict | None:
    """The memory table, once, for a sweep with Table 1's arms."""
    if previous or not any(run.arm.model == "table1" for run in runs):
        return None
    return {"memory": decoder_memory_rows()}
