"""experiments.measure: the studies' own measurements, and the runner's bookkeeping of them."""

import numpy as np
import pytest

from experiments import layout, measure
from experiments.measure import odena as odena_measure
from experiments.measure import segnet as segnet_measure
from experiments.studies import odena


def test_operator_checkerboard_at_init_matches_odena():
    scores = odena_measure.operator_checkerboard_at_init(seeds=[0])
    for label in ("transposed_k2_default", "transposed_k3_default", "transposed_k4_default", "pixel_shuffle_default"):
        assert scores[label][0] > 0.05, label
    for label in (
        "nearest",
        "bilinear",
        "resize_conv_nearest",
        "resize_conv_bilinear",
        "transposed_k3_bilinear",
        "transposed_k4_bilinear",
        "pixel_shuffle_icnr",
    ):
        assert scores[label][0] < 1e-5, label
    assert scores["bed_of_nails"][0] == pytest.approx(np.sqrt(3) / 2, abs=1e-5)


def test_odena_probes_and_their_sections():
    """The overlap probe is exact arithmetic; the gradient probe finds the strided convolution's checkerboard against
    the stride-1 control."""
    probe = odena_measure.constant_kernel_probe()
    assert probe[2]["overlaps"] == [1] and probe[4]["overlaps"] == [4] and probe[3]["overlaps"] == [1, 2, 4]
    assert probe[3]["score"] == pytest.approx(0.436, abs=1e-3) and probe[5]["score"] == pytest.approx(0.275, abs=1e-3)
    assert probe[3]["score_detrended"] == pytest.approx(1.0) and probe[2]["score"] == 0.0
    assert "**Verdict: held**" in odena.overlap_probe_section(list(probe.items()))
    scores = odena_measure.gradient_checkerboards(seeds=range(3))
    text = odena.gradient_probe_section({"seeds": [0, 1, 2], "scores": list(scores.items())})
    assert "| conv k3 stride 2 |" in text and text.count("| held |") >= 1


def test_decoder_memory_of_table1():
    memory = {r["model"]: r for r in segnet_measure.decoder_memory_rows()}
    assert memory["fcn_basic"]["paper"] / memory["segnet_basic"]["paper"] == pytest.approx(11, rel=0.01)
    assert memory["bilinear_basic"]["paper"] == 0 and memory["segnet_basic"]["params"] == 1_416_075
    assert all(r["temp_mib"] > 0 for r in memory.values())


def test_measure_studies_measures_what_is_missing_and_everything_again(tmp_path, monkeypatch):
    calls = []

    def fake(out, runs, previous):
        calls.append(previous)
        return None if previous else {"n": len(calls)}

    monkeypatch.setattr(measure, "MEASURES", {"fake": fake})
    assert measure.measure_studies(tmp_path, [], log=lambda s: None) == ["fake"]
    assert layout.read_json(layout.study_file(tmp_path, "fake")) == {"n": 1}
    assert measure.measure_studies(tmp_path, [], log=lambda s: None) == []  # kept: nothing new
    assert calls[-1] == {"n": 1}
    assert measure.measure_studies(tmp_path, [], again=True, log=lambda s: None) == ["fake"]  # --reanalyze
    assert calls[-1] is None and layout.read_json(layout.study_file(tmp_path, "fake")) == {"n": 3}
