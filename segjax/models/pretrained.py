"""Pretrained encoder weights from local files: torchvision state dicts (`.pth`, read with
`torch.load(weights_only=True)` when PyTorch is installed) and timm `.safetensors` (read with the `safetensors`
package's numpy API, no torch: only the tensors the encoder needs are read).

Which tensors go where follows from the configured encoder:
  - VGG encoder (FCN, SegNet, U-Net, DeconvNet): torchvision's `features.{i}` layout, conv (+ batch norm with
    `norm='batch'`, as in vgg16_bn) + ReLU per layer and a max pooling per level; `norm='none'` reads vgg16,
    `norm='batch'` vgg16_bn. Where the model has VGG's fully connected layers as biased convolutions (FCN, and
    DeconvNet with `norm='none'`), fc6 and fc7 come from `classifier.0` / `classifier.3` (Linear(25088, 4096) folded
    into a 7x7 convolution, as FCN did) or timm's `pre_logits.fc1` / `.fc2`, when the file has them.
  - ResNet-50 and ResNet-101 encoders: torchvision's names (`conv1`, `bn1`, `layer{i}.{j}.conv{k}`, `.bn{k}`,
    `.downsample.0/1`), which timm's resnet50 / resnet101 share; the two differ only in layer3's depth (6, 23 blocks).
Every encoder tensor must be in the file with its shape, or nothing is loaded: `load_encoder_weights` raises a
`PretrainedWeightsError` naming the first missing or mismatching tensors, and for a ResNet also the backbone tensors
the encoder does not have (ResNet-101's layer3.6 and on, given to a ResNet-50). The decoder keeps its fresh
initialisation; the report says which tensors were loaded and which file tensors were not used (the classifier).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import re
from collections.abc import Mapping

import numpy as np
import safetensors
from flax import traverse_util

from segjax.models.encoder import RESNET_BLOCKS

_SHOWN = 5  # mismatches named in an error


class PretrainedWeightsError(ValueError):
    """A weights file that cannot be read or does not fit the configured encoder."""


# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _opened(path: str):
    """`safe_open(path)` (numpy arrays; the header is parsed and its offsets checked against the file's size, no
    tensor is read), with the package's errors as one-line PretrainedWeightsErrors naming the file."""
    try:
        with safetensors.safe_open(path, framework="np") as f:
            yield f
    except safetensors.SafetensorError as e:
        raise PretrainedWeightsError(f"{path} is not a readable safetensors file ({e}).") from None


class SafetensorsTensors(Mapping):
    """The tensors of a `.safetensors` file by name, each read from the file (memory-mapped) only when asked for,
    so loading an encoder reads the encoder's tensors and not the rest (a classifier, a decoder). Arrays keep the
    file's dtype: bfloat16 arrives as `ml_dtypes.bfloat16` (the loader converts every tensor to float32)."""

    def __init__(self, path: str):
        self.path = path
        with _opened(path) as f:
            self._names = tuple(f.offset_keys())  # in the order of the data (a torch state dict's, as written)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        with _opened(self.path) as f:
            return f.get_tensor(name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a `.safetensors` file as name -> numpy array in the file's dtype (see SafetensorsTensors)."""
    return dict(SafetensorsTensors(path))


def _read_torch(path: str) -> dict[str, np.ndarray]:
    try:
        torch = importlib.import_module("torch")  # optional: the 'bench' extra
    except ImportError:
        raise PretrainedWeightsError(
            f"Reading {path} needs PyTorch (pip install -e '.[bench]'), or give the same weights as a .safetensors "
            "file (timm's), which segjax reads without it."
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds (pickle, zip, weights_only refusals; an empty file: EOFError())
        cause = next(iter(str(e).splitlines()), "") or f"{type(e).__name__} (is the file empty or cut short?)"
        raise PretrainedWeightsError(f"torch.load could not read {path}: {cause}") from None
    for wrapper in ("state_dict", "model"):  # training checkpoints wrap it: {"model": state dict, "epoch": 3}
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        held = "an empty dict" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise PretrainedWeightsError(
            f"{path} holds {held}, not a state dict of tensors; save the model's state_dict() "
            "(torch.save(model.state_dict(), path))."
        )
    others = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise PretrainedWeightsError(
            f"{path} is not a state dict of tensors: {', '.join(map(str, others[:3]))} hold(s) other values; save the "
            "model's state_dict() (torch.save(model.state_dict(), path)), or wrap it as {'state_dict': ...}."
        )
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def read_state_dict(path: str) -> Mapping[str, np.ndarray]:
    """The tensors of a `.safetensors` (read lazily) or PyTorch (`.pth`, `.pt`, `.bin`; read whole) file, by name."""
    if not os.path.isfile(path):
        raise PretrainedWeightsError(f"model.encoder_weights: no file {path!r}; give the path of a local weights file.")
    if path.endswith(".safetensors"):
        return SafetensorsTensors(path)
    return _read_torch(path)


# --------------------------------------------------------------------------------------------------
# Names: segjax paths <- torchvision names
# --------------------------------------------------------------------------------------------------


def _conv(w: np.ndarray) -> np.ndarray:
    """PyTorch conv weight (O, I, kh, kw) -> HWIO."""
    return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w


def _fc_as_conv(kernel_shape):
    """A Linear weight (out, in) or a conv weight, folded into a HWIO kernel of `kernel_shape` (FCN's fc6: the
    Linear over a flattened (C, 7, 7) map is a 7x7 convolution)."""
    kh, kw, cin, cout = kernel_shape

    def transform(w):
        if w.ndim == 2 and w.shape == (cout, cin * kh * kw):
            w = w.reshape(cout, cin, kh, kw)
        return _conv(w)

    return transform


_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _vgg_names(encoder_paths, norm: str) -> dict:
    """segjax encoder path -> torchvision `features.{i}` name for a VGGEncoder's parameters."""
    layers = sorted({(int(block[len("block") :]), int(re.sub(r"\D", "", layer))) for block, layer, _ in encoder_paths})
    per_layer = 3 if norm == "batch" else 2  # conv, (bn,) relu
    index, layer_index, previous_level = 0, {}, None
    for level, j in layers:
        if previous_level is not None and level != previous_level:
            index += 1  # the max pooling between levels
        layer_index[(f"block{level}", j)] = index
        index += per_layer
        previous_level = level
    names = {}
    for path in encoder_paths:
        block, layer, leaf = path
        j = int(re.sub(r"\D", "", layer))
        i = layer_index[(block, j)]
        if layer.startswith("conv"):
            names[path] = f"features.{i}.{'weight' if leaf == 'kernel' else 'bias'}"
        else:
            names[path] = f"features.{i + 1}.{_BN[leaf]}"
    return names


# The names of a torchvision ResNet's backbone (everything but its classifier `fc`): a file tensor so named that the
# encoder does not have is a deeper network's, never left unused.
_RESNET_BACKBONE = re.compile(r"^(conv1|bn1|layer\d+)\.")


def _resnet_names(encoder_paths) -> dict:
    names = {}
    for path in encoder_paths:
        *modules, leaf = path
        parts = []
        for m in modules:
            m = m.replace("downsample_conv", "downsample.0").replace("downsample_norm", "downsample.1")
            parts.append(re.sub(r"^layer(\d)_(\d+)$", r"layer\1.\2", m))
        torch_leaf = "weight" if leaf == "kernel" else _BN[leaf]
        names[path] = ".".join(parts + [torch_leaf])
    return names


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one segjax tensor comes from: its collection and path, the file names to try in order, the transform
    (called with that tensor and the tensors named by `also`)."""

    collection: str
    path: tuple[str, ...]
    names: tuple[str, ...]
    transform: object
    required: bool = True
    also: tuple[str, ...] = ()


def _identity(w):
    return w


def _mean_minus_bias(running_mean, conv_bias):
    """vgg16_bn's convolutions have a bias before batch norm, segjax's none (the mean subtraction cancels it in
    training); in inference BN(conv + b) with running mean m equals BN(conv) with running mean m - b."""
    return running_mean - conv_bias


def encoder_sources(model, variables) -> list[Source]:
    """For a segjax model and its (abstract) variables: where each encoder tensor (and fc6/fc7 where they fit) comes
    from in a torchvision / timm state dict."""
    norm = model.norm.kind
    if norm == "group":
        raise PretrainedWeightsError(
            "model.encoder_weights: the published VGG and ResNet weights have no group norm; use model.norm='batch' "
            "(vgg16_bn, resnet50, resnet101) or 'none' (vgg16)."
        )
    sources = []
    for collection in ("params", "batch_stats"):
        flat = traverse_util.flatten_dict(dict(variables.get(collection, {})))
        paths = [p[1:] for p in flat if p[0] == "encoder"]
        names = _resnet_names(paths) if model.encoder in RESNET_BLOCKS else _vgg_names(paths, norm)
        for path in paths:
            source = Source(
                collection, ("encoder", *path), (names[path],), _conv if path[-1] == "kernel" else _identity
            )
            if model.encoder == "vgg" and path[-1] == "mean":  # fold the conv's bias (see _mean_minus_bias)
                conv_bias = re.sub(r"^features\.(\d+)\..*$", lambda m: f"features.{int(m[1]) - 1}.bias", names[path])
                source = dataclasses.replace(source, transform=_mean_minus_bias, also=(conv_bias,))
            sources.append(source)
        if collection == "params" and model.encoder == "vgg" and ("fc6", "bias") in flat:
            for layer, torchvision, timm in (
                ("fc6", "classifier.0", "pre_logits.fc1"),
                ("fc7", "classifier.3", "pre_logits.fc2"),
            ):
                kernel_shape = flat[(layer, "kernel")].shape
                sources.append(
                    Source(
                        collection,
                        (layer, "kernel"),
                        (f"{torchvision}.weight", f"{timm}.weight"),
                        _fc_as_conv(kernel_shape),
                        required=False,
                    )
                )
                sources.append(
                    Source(
                        collection,
                        (layer, "bias"),
                        (f"{torchvision}.bias", f"{timm}.bias"),
                        lambda w: w,
                        required=False,
                    )
                )
    return sources


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
    """Validated arrays for the model (collection -> flat path -> array) and what happened to every tensor."""

    path: str
    arrays: dict
    loaded: tuple[str, ...]  # file names used
    unused: tuple[str, ...]  # file names not used (e.g. the ImageNet classifier)
    fresh: tuple[str, ...]  # segjax parameter paths left at their initialisation (the decoder)
    origin: str = ""  # what `path` is, for the log ('' : an encoder weights file)

    def summary(self) -> str:
        origin = self.origin or f"encoder weights from {self.path}"
        return (
            f"{origin}: {len(self.loaded)} tensors loaded; its tensors not used: {_short(self.unused)}; freshly "
            f"initialised: {_short(self.fresh)}"
        )

    def apply(self, variables: dict) -> dict:
        """`variables` (collection -> nested dict) with the loaded arrays in place."""
        out = dict(variables)
        for collection, arrays in self.arrays.items():
            flat = traverse_util.flatten_dict(dict(variables[collection]))
            for path, array in arrays.items():
                flat[path] = np.asarray(array, np.asarray(flat[path]).dtype)
            out[collection] = traverse_util.unflatten_dict(flat)
        return out


def _short(names) -> str:
    names = list(names)
    if not names:
        return "none"
    head = ", ".join(names[:8])
    return head + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def load_encoder_weights(path: str, model, variables) -> LoadedWeights:
    """Reads `path` and matches it to the encoder of `model` (whose variables, real or abstract, give the shapes).

    Raises PretrainedWeightsError when a required tensor is missing, any matched tensor has the wrong shape or a
    ResNet file has backbone tensors the encoder lacks, naming the first ones (so nothing is half-loaded)."""
    state = read_state_dict(path)
    sources = encoder_sources(model, variables)
    arrays, used, missing, mismatched = {}, set(), [], []
    for source in sources:
        name = next((n for n in source.names if n in state), None)
        if name is None:
            if source.required:
                missing.append(f"{source.names[0]} (for {'/'.join(source.path)})")
            continue
        expected = tuple(traverse_util.flatten_dict(dict(variables[source.collection]))[source.path].shape)
        if any(n not in state for n in source.also):
            missing.extend(f"{n} (for {'/'.join(source.path)})" for n in source.also if n not in state)
            continue
        tensors = [np.asarray(state[n], np.float32) for n in (name, *source.also)]  # bfloat16 too
        array = source.transform(*tensors)
        if tuple(array.shape) != expected:
            mismatched.append(f"{name} {tuple(tensors[0].shape)} -> {'/'.join(source.path)} needs {expected}")
            continue
        arrays.setdefault(source.collection, {})[source.path] = array.astype(np.float32)
        used.update((name, *source.also))
    unexpected = []
    if model.encoder in RESNET_BLOCKS:
        named = {n for source in sources for n in (*source.names, *source.also)}
        unexpected = [
            f"{n} (not in the encoder)"
            for n in state
            if n not in named and _RESNET_BACKBONE.match(n) and not n.endswith("num_batches_tracked")
        ]
    if missing or mismatched or unexpected:
        problems = (mismatched + missing + unexpected)[:_SHOWN]
        extra = f", {len(unexpected)} the encoder does not have" if unexpected else ""
        raise PretrainedWeightsError(
            f"model.encoder_weights {path} does not fit the configured encoder ({model.encoder}, norm "
            f"{model.norm.kind!r}, base_width {model.base_width}): {len(mismatched)} tensors with other shapes, "
            f"{len(missing)} missing{extra}; first: {'; '.join(problems)}. Use the weights of the same network (vgg16 "
            "for norm 'none', vgg16_bn for 'batch', resnet50 or resnet101 for that encoder) with preset 'paper'."
        )
    fresh = [
        "/".join(p) for p in traverse_util.flatten_dict(dict(variables["params"])) if p not in arrays.get("params", {})
    ]
    unused = tuple(n for n in state if n not in used and not n.endswith("num_batches_tracked"))
    return LoadedWeights(path, arrays, tuple(sorted(used)), unused, tuple(fresh))


def weights_from_run(workdir: str, step: int, source: dict, variables, *, average: bool = False) -> LoadedWeights:
    """Another run's trained variables (`source`: collection -> nested dict, from its checkpoint of `step`) matched
    to this model's (`variables`, real or abstract) by path and shape: what has the same name and shape is copied,
    the rest keeps its initialisation (FCN-16s from FCN-32s: the encoder, fc6/fc7 and the score layer are copied;
    pool4's score and the new upsamplers are fresh); `average`: `source` is the run's moving average. The whole
    encoder must be there with its shapes, or nothing is loaded: raises PretrainedWeightsError naming what differs
    (a run of another network or width)."""
    arrays, loaded, unused, encoder_misfits = {}, [], [], []
    for collection in ("params", "batch_stats"):
        theirs = traverse_util.flatten_dict(dict(source.get(collection) or {}))
        mine = traverse_util.flatten_dict(dict(variables.get(collection) or {}))
        for path, target in mine.items():
            name = f"{collection}/{'/'.join(path)}"
            shape = tuple(theirs[path].shape) if path in theirs else None
            if shape != tuple(target.shape) and path[0] == "encoder":
                encoder_misfits.append(f"{name} {'missing' if shape is None else shape} (needs {tuple(target.shape)})")
        for path, array in theirs.items():
            name = f"{collection}/{'/'.join(path)}"
            if path not in mine:
                unused.append(name)
            elif tuple(array.shape) != tuple(mine[path].shape):
                unused.append(f"{name} {tuple(array.shape)} (needs {tuple(mine[path].shape)})")
            else:
                arrays.setdefault(collection, {})[path] = np.asarray(array, np.float32)
                loaded.append(name)
    if encoder_misfits:
        raise PretrainedWeightsError(
            f"model.init_from {workdir}: its checkpoint (step {step}) does not hold the configured encoder: "
            f"{len(encoder_misfits)} encoder tensors missing or with other shapes; first: "
            f"{'; '.join(encoder_misfits[:_SHOWN])}. Start from a run of the same network and widths."
        )
    fresh = [
        "/".join(p) for p in traverse_util.flatten_dict(dict(variables["params"])) if p not in arrays.get("params", {})
    ]
    return LoadedWeights(
        workdir,
        arrays,
        tuple(loaded),
        tuple(unused),
        tuple(fresh),
        f"weights of the run {workdir} (step {step}{', EMA weights' if average else ''})",
    )
