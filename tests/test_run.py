"""segjax.run: the stored config of a run, read back and completed by a newer segjax."""

import json
import os

from segjax import run as run_lib
from segjax.config import load_sibling

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_resume_sees_no_change_in_tuples_after_the_json_round_trip(tmp_path):
    config = load_sibling(os.path.join(REPO, "configs", "quickstart.py"), "quickstart").get_config()
    run_lib.save_config(config, str(tmp_path))
    assert run_lib.changes_since_start(config, str(tmp_path)) == []
    config.seed = 3
    config.data.crop_size = (48, 48)
    assert run_lib.changes_since_start(config, str(tmp_path)) == [
        "data.crop_size: None -> [48, 48]",
        "seed: 0 -> 3",
    ]


def test_a_stored_config_from_an_older_segjax_gets_the_new_keys(tmp_path):
    """segjax-eval reads a workdir's config.json; keys added since it was written get their defaults, its own
    values stay."""
    config = load_sibling(os.path.join(REPO, "configs", "unet.py"), "unet").get_config()
    config.eval.mode = "slide"
    stored = config.to_dict()
    del stored["eval"]["max_buckets"], stored["model"]["encoder"], stored["model"]["upsample"]["resize"]
    (tmp_path / run_lib.CONFIG_FILE).write_text(json.dumps(stored, default=list))
    loaded = run_lib.stored_config(str(tmp_path))
    assert loaded.eval.max_buckets == 8 and loaded.model.encoder == "vgg" and loaded.model.upsample.resize == "nearest"
    assert loaded.eval.mode == "slide" and loaded.model.name == "unet"
