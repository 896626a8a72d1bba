"""Noh et al. (DeconvNet) against FCN-8s at 128 px, and their ensemble (EDeconvNet).

  deconvnet_128_cpu  DeconvNet vs FCN-8s at 128 px and their ensemble, hypothesis D1 and the ensemble's and boundary /
              small-object contrasts in its section, 5 paired seeds

FCN-8s with fixed upsampling as released, and DeconvNet (configs/deconvnet.py, the 'small' preset's fc layers) with
FCN's depth 5 and width, so both encoders pool to stride 32, on FCN_128_TRAINING. The ensemble (the average of the two
networks' class probabilities) of each seed's two runs is the study's measurement (experiments.measure.deconvnet).
"""

from __future__ import annotations

import math

from experiments.definitions import DECONVNET_SEEDS, FCN_128_TRAINING, Arm, Hypothesis, Sweep, fcn_arm
from experiments.gates import Gate
from experiments.results import paired
from experiments.tables import open_section, paired_family, params, seed_spread

NAME = "deconvnet"
MODEL = "edeconvnet"
MEMBERS = ("fcn8s_fixed", "deconvnet")
EDECONVNET = (*MEMBERS, "ensemble")
SMALL_OBJECTS = ("speck", "wire")  # the embedded dataset's small and thin classes
DECONVNET_HYPOTHESES = (Hypothesis("D1", "Noh et al.: does DeconvNet beat FCN-8s?", MODEL, "deconvnet", "fcn8s_fixed"),)
# Column -> its value in a network's measurements (experiments.analysis.ensemble_measurements).
COLUMNS = {
    "mIoU": lambda m: m["mean_iou"],
    "BF 0 px": lambda m: m["boundary_f1"]["0"],
    "BF 2 px": lambda m: m["boundary_f1"]["2"],
    **{f"IoU {c}": (lambda m, c=c: m["iou"].get(c, math.nan)) for c in SMALL_OBJECTS},
}
# Training adequacy, declared AFTER the exploratory runs of deconvnet_128_cpu (committed report, issue 22): it labels
# training failures and is not a preregistered rule. A network with a learned decoder has trained when its loss ends
# at most 2/3 of the first logged one (the mean of the first 100 steps, after the warm-up: part of the fall is in it),
# when it beats the no-decoder baseline at 128 px (FCN-32s, one fixed bilinear upsampling: 0.28-0.37 mIoU at seeds 0-4,
# mean 0.34, in fcn_128_cpu and fcn_staged_128_cpu; predicting background everywhere scores about 0.13), and when it
# predicts every class somewhere. FCN-8s reached 0.59-0.60 with every class; DeconvNet at width 8 0.20-0.27, wire and
# speck IoU 0 at every seed.
GATE = Gate(loss_drop=1.5, min_miou=0.34, classes_predicted=1.0)
WIDTH_ASKED = "16-32"  # where issue 22 asks DeconvNet to be trained again
PILOT_SECONDS = 514  # one DeconvNet run at width 16 (deconvnet_128_w16_pilot, 2 jobs on 2 cores)
CLAIMS = (
    ("deconvnet", "fcn8s_fixed", "BF 2 px"),
    ("deconvnet", "fcn8s_fixed", "IoU speck"),
    ("ensemble", "fcn8s_fixed", "mIoU"),
    ("ensemble", "deconvnet", "mIoU"),
)


def deconvnet_128(name="deconvnet_128_cpu", width=FCN_128_TRAINING["model.base_width"], seeds=DECONVNET_SEEDS):
    arms = (
        fcn_arm("8s", model=MODEL),
        Arm(MODEL, "deconvnet", "deconvnet", {"model.depth": 5}, {"method": "max_unpool"}),
    )
    seeds = tuple(range(seeds)) if isinstance(seeds, int) else seeds
    return Sweep(
        name,
        arms,
        seeds,
        {**FCN_128_TRAINING, "model.base_width": width},
        f"Noh et al.: DeconvNet vs FCN-8s at 128 px, width {width}, and their ensemble, {len(seeds)} paired seeds.",
        DECONVNET_HYPOTHESES,
        reference="fcn8s_fixed",
        reproduction=True,
        gate=GATE,
    )


PRESETS = {
    "deconvnet_128_cpu": deconvnet_128,
    # Issue 22: D1 again at a width where DeconvNet may train. The pilot (seed 100, disjoint from the test seeds)
    # checks the gate and times a run: at width 16 DeconvNet reached 0.26 mIoU (gate: 0.34) in PILOT_SECONDS, FCN-8s
    # 0.62 in 290 s. Width 32 would cost about 4 times as much, beyond this CPU budget, so the test
    # runs at width 16 with the 3 seeds that fit in about 20 minutes.
    "deconvnet_128_w16_pilot": lambda: deconvnet_128("deconvnet_128_w16_pilot", 16, (100,)),
    "deconvnet_128_w16_cpu": lambda: deconvnet_128("deconvnet_128_w16_cpu", 16, 3),
}


def sections(results, report_dir) -> list[str]:
    section = deconvnet_section(results)
    return [section] if section else []


def ensemble_arms(results, seeds) -> list[dict]:
    """FCN-8s, DeconvNet and the ensemble as arms whose members are the seeds' measurements on the same pixels."""
    measured = (results.study(NAME) or {}).get("seeds", {})
    found = [(s, measured[str(s)]["measured"]) for s in seeds if str(s) in measured]
    return [
        {
            "model": MODEL,
            "label": name,
            "_members": [{"seed": s, **{k: f(m[name]) for k, f in COLUMNS.items()}} for s, m in found],
        }
        for name in EDECONVNET
    ]


def deconvnet_section(results) -> str | None:
    opened = open_section(
        results,
        MODEL,
        MEMBERS,
        title="Reproduction: Noh et al. (DeconvNet) vs FCN-8s, and their ensemble (EDeconvNet)",
        claim="DeconvNet's deep unpooling decoder beats FCN-8s on PASCAL VOC 2012 (69.6 vs 62.2 mIoU), "
        "recovering fine structures and small objects that FCN's coarse upsampling misses, while FCN captures the "
        "overall shape; the two are complementary, so averaging their class probabilities (EDeconvNet) beats both "
        "(71.7).",
    )
    if opened is None:
        return None
    fcn, deconv = opened.found.values()
    pseudo = ensemble_arms(results, paired([fcn, deconv], "_workdir")[0])
    width = deconvnet_width(results)
    lines = opened.lines + [
        "Here: FCN-8s with its upsampling fixed as released and DeconvNet (max-unpooling with the encoder's indices, "
        f"stride-1 convolutions; fc layers of the small preset) on the same 128 px budget, depth 5 and width {width}, "
        "trained from scratch on the embedded dataset; the ensemble averages the softmax probabilities of the same "
        "seed's two runs on the whole validation split (every number below is measured on those same pixels). Not "
        "done: DeconvNet's instance-wise training on object proposals, the CRF, VGG16 initialisation. mIoU verdict: "
        "D1 above. Small objects: the IoU of the embedded dataset's specks (a few pixels each) and wires (1-2 px "
        "wide).",
        "",
    ]
    status = results.gate_status()
    lines += untrained_lines(status, width)
    if not pseudo[0]["_members"]:
        return "\n".join([*lines, "The ensemble was not measured (`--reanalyze` measures it)."])
    lines += ["| network | params | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for p, name, arm in zip(pseudo, ("FCN-8s", "DeconvNet", "EDeconvNet"), (fcn, deconv, None), strict=True):
        cells = [seed_spread([m[k] for m in p["_members"]]) for k in COLUMNS]
        lines.append(f"| {name} | {params(arm) if arm else 'both'} | " + " | ".join(cells) + " |")
    verdicts = paired_family(pseudo, MODEL, CLAIMS, status, parts={"ensemble": MEMBERS})
    lines += ["", f"Seed-paired contrasts on these pixels, Holm over {len(verdicts)}:", *verdicts]
    both = [v for v in verdicts if v.startswith("- ensemble >")]
    held = len(both) == 2 and all("**held**" in v for v in both)
    untested = any("**not tested" in v for v in both)
    lines += [
        "",
        f"EDeconvNet beats both networks (an intersection-union test: both contrasts must hold): "
        f"**{'not tested' if untested else 'held' if held else 'not shown'}**.",
    ]
    return "\n".join(lines)


def untrained_lines(status: dict, width: int) -> list[str]:
    """What the gate says of DeconvNet when it did not train at this width (and what issue 22 asks for)."""
    why = status.get((MODEL, "deconvnet"))
    if not why:
        return []
    asked = (
        f"Issue 22 asks for DeconvNet again at widths {WIDTH_ASKED}: deconvnet_128_w16_cpu trains it at width 16."
        if width < 16
        else f"Issue 22 asks for widths {WIDTH_ASKED}; width 32 costs about 4 times as much per run as width 16 "
        f"(whose pilot took {PILOT_SECONDS} s per DeconvNet run on 2 cores), beyond this CPU budget, so D1 stays "
        "untested here."
    )
    return [
        f"**DeconvNet did not train at width {width}** by the training-adequacy gate ({why}; the gate and every "
        f"arm's status are in the adequacy section): D1 and every contrast with DeconvNet or the ensemble read "
        f"'not tested', not 'did not hold'. {asked}",
        "",
    ]


def deconvnet_width(results) -> int:
    """The width DeconvNet was trained at (its sweep's model.base_width)."""
    sweep = next(s for s in results.sweeps if any((a["model"], a["label"]) == (MODEL, "deconvnet") for a in s["arms"]))
    return sweep["overrides"]["model.base_width"]
