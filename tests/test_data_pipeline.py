"""The grain pipeline on the embedded dataset: determinism, resuming, sharding, evaluation passes, transforms."""

import threading

import numpy as np
import pytest

from segjax import data as data_lib
from segjax.data import default_data_config, folder, get_dataset_info, make_loader, pipeline, shapes, transforms

NUM_TRAIN, NUM_VAL = 40, 10


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    c = default_data_config()
    c.data_dir = str(tmp_path_factory.mktemp("tfds"))
    c.embedded.num_train, c.embedded.num_validation, c.embedded.num_test = NUM_TRAIN, NUM_VAL, 5
    c.crop_size = 48  # smaller than the 64 px images, so random crops move
    c.num_workers = 2
    return c


def take(loader, n):
    return [next(loader) for _ in range(n)]


def train_loader(config, **kw):
    args = dict(global_batch_size=8, train=True, seed=0, process_index=0, process_count=1)
    args.update(kw)
    return make_loader(config, **args)


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_dataset_info(config):
    info = get_dataset_info(config)
    assert info.num_classes == 6 and info.class_names == shapes.CLASS_NAMES
    assert info.ignore_index == 255
    assert info.num_examples == {"train": NUM_TRAIN, "validation": NUM_VAL}
    assert info.crop_size == (48, 48) and info.eval_size == (48, 48)


def test_train_batches_have_the_contract_types(config):
    batch = next(train_loader(config))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (8, 48, 48, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8, 48, 48) and batch["label"].dtype == np.int32
    assert set(np.unique(batch["label"])) <= set(range(6)) | {255}
    # normalised: roughly zero mean, unit scale, not raw 0..255 values
    assert -3 < batch["image"].mean() < 3 and batch["image"].max() < 3


def test_same_seed_same_batches_other_seed_other_batches(config):
    a = take(train_loader(config, seed=5), 3)
    assert_batches_equal(a, take(train_loader(config, seed=5), 3))
    b = take(train_loader(config, seed=6), 3)
    assert not np.array_equal(a[0]["label"], b[0]["label"])


def test_worker_count_does_not_change_batches(config):
    single = config.copy_and_resolve_references()
    single.num_workers = 0
    assert_batches_equal(take(train_loader(config), 3), take(train_loader(single), 3))


def test_resume_from_step_equals_uninterrupted_run_across_epochs(config):
    steps_per_epoch = NUM_TRAIN // 8
    full = take(train_loader(config), steps_per_epoch + 3)
    resumed = take(train_loader(config, start_step=steps_per_epoch - 1), 4)  # crosses the epoch boundary
    assert_batches_equal(full[steps_per_epoch - 1 :], resumed)


def test_epochs_are_reshuffled_and_cover_every_example(config):
    # Without augmentation, each epoch is a permutation of the split and the next epoch another one.
    plain = config.copy_and_resolve_references()
    plain.scale_range, plain.hflip, plain.crop_size = (1.0, 1.0), False, 64
    batches = take(train_loader(plain), 2 * NUM_TRAIN // 8)
    keys = [lab.tobytes() for b in batches for lab in b["label"]]
    first, second = keys[:NUM_TRAIN], keys[NUM_TRAIN:]
    expected = {shapes.generate_scene(0, "train", i, 64)[1].astype(np.int32).tobytes() for i in range(NUM_TRAIN)}
    assert set(first) == expected and set(second) == expected
    assert first != second


def test_process_shards_partition_each_global_batch(config):
    whole = take(train_loader(config, global_batch_size=8), 2)
    shards = [take(train_loader(config, global_batch_size=8, process_index=p, process_count=2), 2) for p in range(2)]
    for k in range(2):
        for p in range(2):
            assert shards[p][k]["label"].shape[0] == 4
            # Contiguous blocks: process p holds examples 4p .. 4p + 3 of the global batch, in order.
            np.testing.assert_array_equal(shards[p][k]["label"], whole[k]["label"][4 * p : 4 * p + 4])
            np.testing.assert_array_equal(shards[p][k]["image"], whole[k]["image"][4 * p : 4 * p + 4])


def test_eval_is_one_padded_pass_over_every_example(config):
    batches = list(make_loader(config, global_batch_size=4, train=False, seed=0, process_index=0, process_count=1))
    assert len(batches) == 3  # ceil(10 / 4)
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.tolist() == [True] * NUM_VAL + [False] * 2
    labels = np.concatenate([b["label"] for b in batches])
    assert np.all(labels[~valid] == 255)
    # eval_size defaults to the crop size (48); the 64 px images are downscaled to fit it, never cropped.
    assert batches[0]["image"].shape == (4, 48, 48, 3)
    expected = {shapes.generate_scene(0, "validation", i, 64)[1].tobytes() for i in range(NUM_VAL)}
    full = config.copy_and_resolve_references()
    full.eval_size = 64
    full_labels = np.concatenate(
        [
            b["label"][b["valid"]]
            for b in make_loader(full, global_batch_size=4, train=False, seed=0, process_index=0, process_count=1)
        ]
    )
    assert {lab.astype(np.uint8).tobytes() for lab in full_labels} == expected
    # Two processes: disjoint halves of every global batch, together every example once.
    shards = [
        list(make_loader(full, global_batch_size=4, train=False, seed=0, process_index=p, process_count=2))
        for p in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 3
    got = [lab.astype(np.uint8).tobytes() for s in shards for b in s for lab in b["label"][b["valid"]]]
    assert len(got) == NUM_VAL and set(got) == expected


def test_loader_argument_errors(config):
    with pytest.raises(ValueError, match="multiple of process_count"):
        make_loader(config, global_batch_size=7, train=True, seed=0, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="start_step"):
        make_loader(config, global_batch_size=4, train=False, seed=0, start_step=3, process_index=0, process_count=1)
    bad = config.copy_and_resolve_references()
    bad.name = "imagenet"
    with pytest.raises(ValueError, match="'imagenet'.*'oxford_iiit_pet'"):
        get_dataset_info(bad)
    bad = config.copy_and_resolve_references()
    bad.scale_range = (1.5, 0.5)
    with pytest.raises(ValueError, match="scale_range"):
        train_loader(bad)


# ---- transforms on label-coded images: every pixel's colour names its class, so alignment is checkable ----

PALETTE = np.array([[0, 0, 0], [250, 10, 10], [10, 250, 10], [10, 10, 250], [250, 250, 10], [250, 10, 250]], np.uint8)


def coded_example(rng, h=37, w=53, block=4):
    """Random 4x4-block label map with image = PALETTE[label]: colour identifies the class."""
    small = rng.integers(0, len(PALETTE), size=(-(-h // block), -(-w // block)))
    label = np.kron(small, np.ones((block, block), int))[:h, :w].astype(np.uint8)
    return {"image": PALETTE[label], "label": label}


def decode_classes(image, mean, std):
    """Nearest palette colour of each pixel of a normalised image."""
    raw = (image * np.asarray(std) + np.asarray(mean)) * 255.0
    return np.argmin(((raw[..., None, :] - PALETTE[None, None].astype(np.float32)) ** 2).sum(-1), axis=-1)


def test_each_transform_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    ex = coded_example(rng)
    image, label = ex["image"], ex["label"]
    for fn in [
        lambda i, lab: transforms.hflip(i, lab),
        lambda i, lab: transforms.crop(i, lab, 5, 9, (20, 30)),
        lambda i, lab: transforms.pad_to(i, lab, (40, 60), 255),
        lambda i, lab: transforms.resize(i, lab, (74, 106)),  # exact 2x: nearest and bilinear agree
        lambda i, lab: transforms.resize(i, lab, (19, 27)),
        lambda i, lab: transforms.fit_within(i, lab, (30, 30)),
    ]:
        im, lab = fn(image, label)
        assert im.shape[:2] == lab.shape and lab.dtype == np.uint8
        known = lab != 255
        classes = np.argmin(((im[..., None, :].astype(int) - PALETTE[None, None].astype(int)) ** 2).sum(-1), -1)
        agreement = np.mean(classes[known] == lab[known])
        assert agreement > 0.9, agreement  # bilinear image edges may differ; a shift would drop to ~1/6
        assert np.all(im[~known] == 0)  # padding: zero image, ignored label
    # Geometric moves that do not resample are exact.
    im, lab = transforms.hflip(*transforms.crop(image, label, 3, 4, (30, 40)))
    np.testing.assert_array_equal(im, PALETTE[lab])
    # Nearest resampling never invents label values.
    _, lab = transforms.resize(image, label, (29, 61))
    assert set(np.unique(lab)) <= set(np.unique(label))


@pytest.mark.parametrize("scale_range", [(1.0, 1.0), (0.5, 2.0)])
def test_train_transform_keeps_alignment_and_pads_with_ignore(scale_range):
    t = transforms.TrainTransform(
        crop_size=(32, 40),
        scale_range=scale_range,
        hflip=True,
        mean=transforms.IMAGENET_MEAN,
        std=transforms.IMAGENET_STD,
        ignore_index=255,
    )
    rng = np.random.default_rng(1)
    saw_padding = False
    for i in range(20):
        out = t(coded_example(rng), np.random.default_rng(i))
        assert out["image"].shape == (32, 40, 3) and out["label"].shape == (32, 40)
        known = out["label"] != 255
        saw_padding |= not known.all()
        classes = decode_classes(out["image"], transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
        if scale_range == (1.0, 1.0):
            np.testing.assert_array_equal(classes, out["label"])
        else:
            assert np.mean(classes[known] == out["label"][known]) > 0.85
    assert saw_padding or scale_range == (1.0, 1.0)


def test_eval_transform_fits_and_pads():
    t = transforms.EvalTransform(eval_size=(24, 24), mean=(0, 0, 0), std=(1, 1, 1), ignore_index=250)
    out = t(coded_example(np.random.default_rng(2), h=37, w=53))
    assert out["image"].shape == (24, 24, 3)
    # 37x53 fits into 24x24 as 17x24 (aspect kept), the remaining rows are padding.
    assert np.all(out["label"][17:] == 250) and np.all(out["label"][:17] != 250)
    np.testing.assert_allclose(out["image"][17:], 0.0)


def test_normalize_formula():
    x = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_allclose(
        transforms.normalize(x, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0)),
        [[[(0 - 0.5) / 0.25, (128 / 255 - 0.5) / 0.5, 0.5]]],
        rtol=1e-6,
        atol=1e-6,
    )


def test_concurrent_preparation_by_another_process_is_tolerated():
    class Builder:
        def __init__(self, prepared):
            self.prepared = prepared

        def download_and_prepare(self):
            raise FileExistsError("Destination .../1.1.0 already exists")

        def is_prepared(self):
            return self.prepared

    folder.prepare_once(Builder(prepared=True))  # the twin finished: fine
    with pytest.raises(FileExistsError):
        folder.prepare_once(Builder(prepared=False))  # anything else is a real error


def test_size_buckets_bound_the_canvases_and_pad_each_image_least():
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.integers(20, 300, size=(40, 2)), [[64, 64], [64, 64], [63, 65], [1, 299]]])
    for max_buckets in (1, 2, 5, 8, 200):
        buckets = data_lib.size_buckets(sizes, 32, max_buckets, minimum=(48, 48))
        assert len(buckets) <= max_buckets
        assert sorted(np.concatenate([i for _, i in buckets]).tolist()) == list(range(len(sizes)))  # each once
        for (h, w), indices in buckets:
            assert h % 32 == 0 and w % 32 == 0
            assert (sizes[indices] <= (h, w)).all() and h >= 48 and w >= 48
        if max_buckets == 1:  # one canvas: the largest size rounded up to the stride
            assert buckets[0][0] == (320, 320)
        if max_buckets == 200:  # no coarsening needed: each image only rounded up to the stride
            for (h, w), indices in buckets:
                rounded = -(-np.maximum(sizes[indices], 48) // 32) * 32
                assert (rounded == (h, w)).all()
    with pytest.raises(ValueError, match="max_buckets must be >= 1"):
        data_lib.size_buckets(sizes, 32, 0)


def test_photometric_augmentation_is_optional_per_element_and_resumes_exactly(config):
    """data.photometric: absent (the defaults) or not enabled is off; on, it recolours images but moves no label, and
    resuming at a step gives the same images as the uninterrupted stream (each element's draws are its own)."""
    assert "photometric" not in default_data_config()
    assert data_lib.DataSpec.from_config(config).photometric is None
    coloured = config.copy_and_resolve_references()
    coloured.photometric = pipeline.photometric_config(enabled=False)
    assert data_lib.DataSpec.from_config(coloured) == data_lib.DataSpec.from_config(config)
    coloured.photometric.enabled = True
    assert data_lib.DataSpec.from_config(coloured).photometric == transforms.PhotometricDistortion()
    plain, full = take(train_loader(config), 3), take(train_loader(coloured), 3)
    for a, b in zip(plain, full, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(plain[0]["image"], full[0]["image"])
    assert_batches_equal(full[1:], take(train_loader(coloured, start_step=1), 2))
    coloured.photometric.hue = 3
    with pytest.raises(ValueError, match=r"Unknown data.photometric keys \['hue'\]"):
        data_lib.DataSpec.from_config(coloured)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(dict(scale_range=(0.5, 2.0), photometric=True), id="rescaled-crops"),
        pytest.param(dict(crop_size=64, scale_range=(1.0, 1.0), photometric=True), id="whole-kept-arrays"),
    ],
)
def test_a_training_loader_decodes_each_example_once_and_gives_the_batches_of_decoding_every_read(
    config, monkeypatch, changes
):
    changed = config.copy_and_resolve_references()
    changed.num_workers = 0  # one reader: the decode count is exact
    for key, value in changes.items():
        if key == "photometric":
            changed.photometric = pipeline.photometric_config(enabled=True)
        else:
            setattr(changed, key, value)
    decoded = []  # this test's reads only (the main thread's): other tests' loaders may still prefetch in theirs
    decode = pipeline._Decode.__call__

    def counted(self, example):
        if threading.current_thread() is threading.main_thread():
            decoded.append(1)
        return decode(self, example)

    monkeypatch.setattr(pipeline._Decode, "__call__", counted)
    steps = 2 * NUM_TRAIN // 8 + 1  # into a third epoch
    kept = take(train_loader(changed), steps)
    assert len(decoded) == NUM_TRAIN
    decoded.clear()
    monkeypatch.setattr(pipeline, "DECODED_CACHE_BYTES", 0)
    assert_batches_equal(kept, take(train_loader(changed), steps))
    assert len(decoded) == steps * 8
