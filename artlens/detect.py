"""Human or AI, and which generator: the data, the measurement and the fit of the ``origin`` model.

The detector is a pair of linear heads on the class and mean patch tokens of several blocks of the
frozen CLIP ViT-B/16 image tower (:class:`artlens.models.BlockTokens`): ``human``/``ai`` and, for AI
images, which of the generators it was trained on. Every image is brought to one size and encoding
first (:func:`artlens.data.canonical_image`), in training, in measurement and in prediction.

What is measured is what a visitor meets: generators and painters the model has never seen. The
folds of :func:`logo_folds` each leave one generator out of training, and a quarter of the painters
(human painters and the artists the AI images were prompted with, so "style of Monet" leaves with
Monet); every image is then scored by the one fold that did not see its generator or its painter.
Those out-of-fold scores give the leave-one-generator-out table, the false-AI rate of each human
source, and the band of p(ai) in which the verdict is ``undecided``.
"""
from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import ConfigError
from .data import RETAKES, DataError, group_from_filename
from .models import TOKENS

__all__ = ["OriginImage", "origin_images", "HUMAN_SOURCES", "GENERATORS", "token_matrix", "fit_linear",
           "logo_folds", "out_of_fold", "choose_band", "verdicts", "band_rates", "generator_threshold"]

# source name -> data sets (imagefolders under the shared data folder)
HUMAN_SOURCES = {"best_artworks": ("paintings_styles10", "paintings_artists50"), "wikiart": ("wikiart_styles11",)}
# generator name -> (data set, how it is told apart); the SD 1.5 set holds two community checkpoints
GENERATORS = {"sd15_deliberate": "Deliberate 2.0", "sd15_dreamshaper": "DreamShaper 3.2",
              "flux1_dev": "ai_flux1dev", "dalle2": "ai_dalle2"}
SD15_SET = "ai_sd15_styles15"
GENERATOR_NAMES = {"sd15_deliberate": "Stable Diffusion 1.5 (Deliberate 2.0)",
                   "sd15_dreamshaper": "Stable Diffusion 1.5 (DreamShaper 3.2)",
                   "sd15": "Stable Diffusion 1.5", "flux1_dev": "FLUX.1 [dev]", "dalle2": "DALL-E 2"}


@dataclass(frozen=True)
class OriginImage:
    path: str
    origin: str      # "human" or "ai"
    source: str      # human source or generator name (sd15 images without a known checkpoint: "sd15")
    group: str       # painter (human) or prompted artist / prompt (AI), one namespace for both


def person(name: str) -> str:
    """One key for a painter's name in every set's spelling: ``Claude_Monet``, ``claude-monet`` and
    ``Monet, Claude`` -> ``claudemonet``."""
    if "," in name:
        last, first = name.split(",", 1)
        name = f"{first} {last}"
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", name.lower())


def _rows(tsv: Path) -> list[dict]:
    with open(tsv, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def origin_images(data: str | Path) -> list[OriginImage]:
    """Every image of the shared data that the origin model learns from, with its source and group.

    Human: ``best_artworks`` (``paintings_styles10`` + ``paintings_artists50``, the files the two share
    counted once) and ``wikiart`` (``wikiart_styles11``). AI: the two SD 1.5 checkpoints of
    ``ai_sd15_styles15`` (from its metadata), ``flux1_dev`` and ``dalle2`` (grouped by prompt).
    """
    data = Path(data)
    need = [s for sets in HUMAN_SOURCES.values() for s in sets] + [SD15_SET, "ai_flux1dev", "ai_dalle2"]
    missing = [s for s in need if not (data / s).is_dir()]
    if missing:
        raise DataError(f"{data} lacks {', '.join(missing)}; pass the folder that holds the shared data sets "
                        f"({', '.join(need)})")
    out: list[OriginImage] = []
    seen: set[str] = set()
    for s in HUMAN_SOURCES["best_artworks"]:
        for f in sorted((data / s).glob("*/*.jpg")):
            if f.name not in seen:
                seen.add(f.name)
                out.append(OriginImage(str(f), "human", "best_artworks", person(group_from_filename(f.name))))
    for r in _rows(data / "wikiart_styles11" / "metadata.tsv"):
        out.append(OriginImage(str(data / "wikiart_styles11" / r["file"]), "human", "wikiart", person(r["artist"])))
    checkpoint = {v: k for k, v in GENERATORS.items() if k.startswith("sd15")}
    # files are <artist as in the metadata, every character but A-Za-z0-9 an underscore>_<tile>.jpg
    # (runs of them one underscore); compared without the underscores
    by_stem = {re.sub(r"[^A-Za-z0-9]+", "", r["artist"]): r for r in _rows(data / SD15_SET / "metadata.tsv")}
    for f in sorted((data / SD15_SET).glob("*/*.jpg")):
        r = by_stem.get(group_from_filename(f.name).replace("_", ""))
        if r is None:
            raise DataError(f"{f.name} has no row in {data / SD15_SET / 'metadata.tsv'}")
        out.append(OriginImage(str(f), "ai", checkpoint.get(r["checkpoint"], "sd15"), person(r["artist"])))
    for r in _rows(data / "ai_flux1dev" / "metadata.tsv"):
        out.append(OriginImage(str(data / "ai_flux1dev" / r["file"]), "ai", "flux1_dev", person(r["label"])))
    for r in _rows(data / "ai_dalle2" / "metadata.tsv"):
        out.append(OriginImage(str(data / "ai_dalle2" / r["file"]), "ai", "dalle2",
                               "prompt:" + re.sub(r"\W+", " ", r["prompt"].lower()).strip()))
    return out


# the keys of the detector's recipe (trainers/configs/default_origin.yaml), all required
RECIPE_KEYS = ("model", "blocks", "tokens", "canonical_size", "canonical_quality", "copies", "C", "max_error",
               "per_source", "test_fraction", "seed")
COPY_KEYS = ("retake", "view", "of")  # one training copy of the rows: its kind, its number, whose (all / ai)


def read_recipe(path: str | Path) -> dict:
    """The detector's YAML recipe, checked: every key of :data:`RECIPE_KEYS` and no other."""
    import yaml

    cfg = yaml.safe_load(Path(path).read_text()) or {}
    unknown = sorted(set(cfg) - set(RECIPE_KEYS))
    missing = [k for k in RECIPE_KEYS if k not in cfg]
    if unknown or missing:
        raise ConfigError(f"{path}: " + "; ".join(
            ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else []))
            + f" (the detector's recipe has exactly {', '.join(RECIPE_KEYS)})")
    if not set(cfg["tokens"]) <= set(TOKENS) or not cfg["blocks"]:
        raise ConfigError(f"{path}: tokens must be among {list(TOKENS)} and blocks a non-empty list")
    for c in cfg["copies"] or []:
        if not isinstance(c, dict) or set(c) != set(COPY_KEYS) or c["retake"] not in RETAKES \
                or c["of"] not in ("all", "ai") or not isinstance(c["view"], int) or c["view"] < 1:
            raise ConfigError(f"{path}: copies entry {c!r}: give retake (one of {', '.join(RETAKES)}), view (1, 2, ...) "
                              "and of (all or ai), e.g. {retake: source, view: 1, of: all}")
    return cfg


# ---------------------------------------------------------------- features and linear heads

def token_matrix(tokens: np.ndarray, blocks: Sequence[int], kinds: Sequence[str] = ("cls", "mean")) -> np.ndarray:
    """``(N, F)`` float32 from :func:`artlens.features.image_tokens`' ``(N, blocks, 2, D)``: the ``kinds`` of
    ``blocks``, block-major, in the order :class:`artlens.models.BlockTokens` concatenates them."""
    n = tokens.shape[1]
    b = sorted({int(i) % n for i in blocks})
    return np.ascontiguousarray(tokens[:, b][:, :, [TOKENS.index(k) for k in kinds]].reshape(len(tokens), -1),
                                dtype=np.float32)


def balanced_weights(rows: Sequence[OriginImage]) -> np.ndarray:
    """Sample weights under which human and AI weigh the same, and within each, every source
    (generator, human set) the same: the detector may not lean on whichever generator has most images."""
    w = np.zeros(len(rows))
    for origin in ("human", "ai"):
        idx = [i for i, r in enumerate(rows) if r.origin == origin]
        keys = {rows[i].source for i in idx}
        for k in keys:
            sub = [i for i in idx if rows[i].source == k]
            w[sub] = 1.0 / (len(keys) * len(sub))
    return w * len(rows) / max(w.sum(), 1e-12)


def fit_linear(X: np.ndarray, y: Sequence[str], classes: Sequence[str], weights: np.ndarray | None = None,
               C: float = 0.1, max_iter: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """A logistic regression on standardised features, returned as ``(W, b)`` of one linear layer on the
    raw features (``len(classes)`` logits; the standardisation is folded in, so the layer is all that
    ships). Two classes give the logits ``-z/2, z/2``: their softmax is the fitted sigmoid."""
    from sklearn.linear_model import LogisticRegression

    mu = X.mean(0)
    sd = X.std(0) + 1e-6
    yi = np.array([list(classes).index(c) for c in y])
    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit((X - mu) / sd, yi, sample_weight=weights)
    coef, icpt = clf.coef_ / sd, clf.intercept_ - (clf.coef_ * (mu / sd)).sum(1)
    if len(classes) == 2:
        coef = np.concatenate([-coef / 2, coef / 2])
        icpt = np.concatenate([-icpt / 2, icpt / 2])
    return coef.astype(np.float32), icpt.astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def linear_probs(X: np.ndarray, head: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return softmax(X @ head[0].T + head[1])


# ---------------------------------------------------------------- folds and out-of-fold scores

def logo_folds(rows: Sequence[OriginImage], seed: int = 0,
               generators: Sequence[str] = tuple(GENERATORS)) -> list[dict]:
    """One fold per generator: its images are the fold's AI test images, and a quarter (one in
    ``len(generators)``) of the painters of each human source its human test images, painters spread
    over the folds at random (seeded). Training is everything else, less every image that shares a group
    (painter, prompted artist, prompt) with a test image. Each fold: ``name``, ``train``, ``test`` (indices)."""
    rng = np.random.default_rng(seed)
    k = len(generators)
    fold_of_group: dict[str, int] = {}
    for src in sorted({r.source for r in rows if r.origin == "human"}):
        groups = sorted({r.group for r in rows if r.source == src and r.group not in fold_of_group})
        for j, g in enumerate(rng.permutation(groups)):
            fold_of_group[str(g)] = j % k
    folds = []
    for f, gen in enumerate(generators):
        test = [i for i, r in enumerate(rows)
                if (r.origin == "ai" and r.source == gen) or (r.origin == "human" and fold_of_group.get(r.group) == f)]
        groups = {rows[i].group for i in test}
        train = [i for i, r in enumerate(rows) if r.group not in groups and not (r.origin == "ai" and r.source == gen)]
        folds.append({"name": gen, "train": train, "test": test})
    return folds


def source_folds(rows: Sequence[OriginImage]) -> list[dict]:
    """Harder folds for the table: each human source left out of training (its false-AI rate as a new
    source of paintings), and the whole SD 1.5 family left out (both checkpoints)."""
    folds = []
    for src in sorted({r.source for r in rows if r.origin == "human"}):
        test = [i for i, r in enumerate(rows) if r.source == src]
        groups = {rows[i].group for i in test}
        folds.append({"name": f"without {src}", "train": [i for i, r in enumerate(rows) if r.group not in groups],
                      "test": test})
    test = [i for i, r in enumerate(rows) if r.source.startswith("sd15")]
    groups = {rows[i].group for i in test}
    folds.append({"name": "without sd15 (both checkpoints)",
                  "train": [i for i, r in enumerate(rows) if not r.source.startswith("sd15") and r.group not in groups],
                  "test": test})
    return folds


def with_copies(X: np.ndarray, rows: Sequence[OriginImage], idx: Sequence[int],
                copies: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, list[OriginImage]]:
    """Rows ``idx`` of ``X`` and, after them, their training copies: each matrix of ``copies`` is another view
    of every row (:func:`artlens.features.image_tokens` ``view``/``retake``), NaN where a row has no copy."""
    idx = np.asarray(idx, dtype=int)
    parts, sub = [X[idx]], [rows[i] for i in idx]
    for E in copies:
        have = idx[~np.isnan(E[idx]).any(1)]
        parts.append(E[have])
        sub += [rows[i] for i in have]
    return np.concatenate(parts), sub


def fit_origin(X: np.ndarray, rows: Sequence[OriginImage], idx: Sequence[int], C: float = 0.1,
               copies: Sequence[np.ndarray] = ()):
    """The human/AI head fitted on rows ``idx`` and their ``copies`` (:func:`with_copies`) with
    :func:`balanced_weights` (a source's copies share its weight with its originals)."""
    Xs, sub = with_copies(X, rows, idx, copies)
    return fit_linear(Xs, [r.origin for r in sub], ("human", "ai"), balanced_weights(sub), C=C)


def out_of_fold(X: np.ndarray, rows: Sequence[OriginImage], folds: Sequence[dict], C: float = 0.1,
                progress: bool = True, copies: Sequence[np.ndarray] = ()) -> np.ndarray:
    """p(ai) of each row from the fold that tested it (NaN for rows no fold tests); the folds train on
    their rows' ``copies`` too, the scores are of the rows themselves."""
    return _scores(X, rows, folds, C, copies, {}, progress)[0]


# ---------------------------------------------------------------- verdicts

def _weighted_error(p, is_ai, w, t, side):
    sel = p >= t if side == "ai" else p < t
    wrong = (~is_ai if side == "ai" else is_ai) & sel
    tot = w[sel].sum()
    return float(w[wrong].sum() / tot) if tot > 0 else 0.0


def _source_rates(p, sources, t, side):
    """The share of each source in ``sources`` (name -> its scores) that gets the ``side`` verdict at
    threshold ``t``."""
    return [float((q >= t).mean() if side == "ai" else (q < t).mean()) for q in sources.values()]


def choose_band(p: np.ndarray, rows: Sequence[OriginImage], max_error: float = 0.02,
                per_source: bool = True) -> tuple[float, float]:
    """``(lo, hi)``: p(ai) >= hi is ``ai``, p(ai) < lo is ``human``, in between ``undecided``.

    Chosen so that each firm verdict is wrong at most ``max_error`` of the time on ``p`` (out-of-fold
    scores), with every source weighted as in :func:`balanced_weights` (human and AI equally likely,
    every generator and human source alike): ``hi`` is the lowest threshold whose ``ai`` verdicts
    (p >= hi) are wrong at most that often, ``lo`` the highest whose ``human`` verdicts (p < lo) are.
    ``per_source``: besides, no single human source may be called AI, and no single generator called
    human, more than ``max_error`` of the time (an average over sources would let one collection of
    paintings be accused more often to spare another).
    """
    ok = ~np.isnan(p)
    p, rows = p[ok], [r for r, k in zip(rows, ok) if k]
    is_ai = np.array([r.origin == "ai" for r in rows])
    w = balanced_weights(rows)
    cand = np.unique(np.concatenate([p, [0.0, 1.0]]))
    # the sources a verdict can wrong: human sources for "ai", generators for "human"
    other = {side: {s: p[[i for i, r in enumerate(rows) if r.source == s]]
                    for s in sorted({r.source for r in rows if r.origin != side})} for side in ("ai", "human")}

    def fine(t, side):
        if _weighted_error(p, is_ai, w, t, side) > max_error:
            return False
        return not per_source or max(_source_rates(p, other[side], t, side), default=0.0) <= max_error

    hi = next((float(t) for t in cand if fine(t, "ai")), 1.0)
    lo = next((float(t) for t in cand[::-1] if fine(t, "human")), 0.0)
    if lo > hi:  # the firm verdicts do not overlap in error: no undecided band is needed
        lo = hi = (lo + hi) / 2
    return lo, hi


def verdicts(p: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    lo, hi = band
    return np.where(p >= hi, "ai", np.where(p < lo, "human", "undecided"))


def band_rates(p: np.ndarray, rows: Sequence[OriginImage], band: tuple[float, float]) -> list[dict]:
    """Per source (generator or human source) of the rows with a score: n, and the shares given each verdict."""
    out = []
    v = verdicts(np.nan_to_num(p, nan=-1), band)
    for src in sorted({r.source for r in rows}, key=lambda s: (s not in HUMAN_SOURCES, s)):
        idx = [i for i, r in enumerate(rows) if r.source == src and not np.isnan(p[i])]
        if not idx:
            continue
        vs = v[idx]
        out.append({"source": src, "origin": rows[idx[0]].origin, "n": len(idx),
                    "ai": float((vs == "ai").mean()), "undecided": float((vs == "undecided").mean()),
                    "human": float((vs == "human").mean())})
    return out


# ---------------------------------------------------------------- which generator

def fit_generator(X: np.ndarray, rows: Sequence[OriginImage], idx: Sequence[int], generators: Sequence[str],
                  C: float = 0.1, copies: Sequence[np.ndarray] = ()):
    """The which-generator head on the AI rows of ``idx`` whose generator is one of ``generators`` and their
    ``copies`` (every generator weighs the same)."""
    Xs, sub = with_copies(X, rows, [i for i in idx if rows[i].source in generators], copies)
    return fit_linear(Xs, [r.source for r in sub], list(generators), balanced_weights(sub), C=C)


def generator_folds(rows: Sequence[OriginImage], k: int = 5, seed: int = 0,
                    generators: Sequence[str] = tuple(GENERATORS)) -> list[dict]:
    """Held-out prompts: the AI images of ``generators`` in ``k`` group folds (a prompted artist or a
    prompt in one fold only)."""
    rng = np.random.default_rng(seed)
    groups = sorted({r.group for r in rows if r.source in generators})
    fold_of = {str(g): j % k for j, g in enumerate(rng.permutation(groups))}
    ai = [i for i, r in enumerate(rows) if r.source in generators]
    return [{"name": f"prompts {f}", "train": [i for i in ai if fold_of[rows[i].group] != f],
             "test": [i for i in ai if fold_of[rows[i].group] == f]} for f in range(k)]


def generator_threshold(known_top, unseen_top) -> float:
    """The top generator probability below which the answer is "unknown generator": the value that
    best separates the top probability on held-out prompts of known generators from that on images
    of a generator left out of training (maximum of the two rates' mean; the smallest such value).

    Lists of arrays: one ``(known, unseen)`` pair per group (e.g. per left-out style), each group's mean of
    the two rates averaged, so that every group counts alike however many images it has."""
    ks = list(known_top) if isinstance(known_top, (list, tuple)) else [known_top]
    us = list(unseen_top) if isinstance(unseen_top, (list, tuple)) else [unseen_top]
    ks = [np.sort(np.asarray(k, float).ravel()) for k in ks]
    us = [np.sort(np.asarray(u, float).ravel()) for u in us]
    cand = np.unique(np.concatenate(ks + us))
    if not len(cand):
        return 0.5
    score = np.zeros(len(cand))
    for k, u in zip(ks, us, strict=True):
        # (k >= t).mean() + (u < t).mean() at every candidate t, by binary search
        score += (len(k) - np.searchsorted(k, cand, "left")) / max(len(k), 1) + np.searchsorted(u, cand, "left") / max(len(u), 1)
    return float(cand[score.argmax()])


# ---------------------------------------------------------------- the whole measurement and the shipped heads

def test_groups(rows: Sequence[OriginImage], fraction: float = 0.05, seed: int = 0) -> set[str]:
    """A small seeded share of the groups of every source, kept out of the shipped model for the tests."""
    rng = np.random.default_rng(seed)
    out: set[str] = set()
    for src in sorted({r.source for r in rows}):
        groups = sorted({r.group for r in rows if r.source == src})
        n = max(1, round(fraction * len(groups)))
        out.update(str(g) for g in rng.permutation(groups)[:n])
    return out


def seen_folds(rows: Sequence[OriginImage], k: int = 5, seed: int = 0) -> list[dict]:
    """``k`` group folds over every row (painters, prompted artists, prompts): each generator and human source
    is seen in training, the test rows' groups are not. For the rates of generators the model knows."""
    rng = np.random.default_rng(seed)
    groups = sorted({r.group for r in rows})
    fold_of = {g: j % k for j, g in zip(rng.permutation(len(groups)), groups)}
    return [{"name": f"fold {j}", "test": [i for i, r in enumerate(rows) if fold_of[r.group] == j],
             "train": [i for i, r in enumerate(rows) if fold_of[r.group] != j]} for j in range(k)]


def _scores(X, rows, folds, C, copies, test_copies, progress: bool = True) -> tuple[np.ndarray, dict]:
    """Out-of-fold p(ai) of the rows and of each of their ``test_copies`` (one head per fold)."""
    from tqdm.auto import tqdm

    p = np.full(len(rows), np.nan)
    pc = {name: np.full(len(rows), np.nan) for name in test_copies}
    for fold in tqdm(folds, desc="folds", disable=not progress):
        head = fit_origin(X, rows, fold["train"], C, copies)
        t = np.asarray(fold["test"])
        p[t] = linear_probs(X[t], head)[:, 1]
        for name, E in test_copies.items():
            have = t[~np.isnan(E[t]).any(1)]
            pc[name][have] = linear_probs(E[have], head)[:, 1]
    return p, pc


def measure_and_fit(X: np.ndarray, rows: Sequence[OriginImage], C: float = 0.1, max_error: float = 0.02,
                    test_fraction: float = 0.05, seed: int = 0, holdout: bool = True, per_source: bool = True,
                    copies: Sequence[np.ndarray] = (), test_copies: dict | None = None) -> dict:
    """Everything the shipped detector and its card need, from features ``X`` of ``rows``.

    - ``logo``: out-of-fold verdict rates per generator and human source (:func:`logo_folds`), at the
      shipped band; ``sources``: the harder folds of :func:`source_folds`, at the same band.
    - ``band`` (from the out-of-fold scores, :func:`choose_band`) and ``threshold`` (the two-way answer:
      maximum balanced accuracy on the same scores, inside the band).
    - ``generators``: per generator, held-out-prompt accuracy of the which-generator head and the share
      of images named "unknown" by heads trained without that generator; ``generator_min``.
    - ``head``/``generator_head``: ``(W, b)`` fitted on every row but the test groups (``test``: their
      row indices, for the tests).

    Every head also trains on the ``copies`` of its rows (:func:`with_copies`). ``test_copies`` (name ->
    another view of every row, NaN where none): ``logo_copies`` and ``seen_copies`` give the verdict rates of
    the held-out rows' copies at the band, for generators left out (:func:`logo_folds`) and for generators
    seen in training with their prompts held out (:func:`seen_folds`; ``seen``: the rows themselves).
    """
    from sklearn.metrics import roc_auc_score

    folds = logo_folds(rows, seed=seed)
    test_copies = dict(test_copies or {})
    p, pc = _scores(X, rows, folds, C, copies, test_copies)
    band = choose_band(p, rows, max_error, per_source)
    ok = ~np.isnan(p)
    is_ai = np.array([r.origin == "ai" for r in rows])
    w = balanced_weights(rows)
    cand = np.unique(p[ok])
    cand = cand[(cand >= band[0]) & (cand <= band[1])] if band[1] > band[0] else np.array([band[0]])
    bal = [((p[ok & is_ai] >= t).mean() + (p[ok & ~is_ai] < t).mean()) / 2 for t in cand]
    threshold = float(cand[int(np.argmax(bal))])
    out = {"band": [float(band[0]), float(band[1])], "threshold": threshold, "max_error": max_error,
           "per_source": bool(per_source), "C": C,
           "logo": band_rates(p, rows, band),
           "logo_auc": {f["name"]: float(roc_auc_score(is_ai[f["test"]], p[f["test"]])) for f in folds},
           "firm_error": {side: _weighted_error(p[ok], is_ai[ok], w[ok], band[1] if side == "ai" else band[0], side)
                          for side in ("ai", "human")}}
    for row in out["logo"]:
        idx = [i for i, r in enumerate(rows) if r.source == row["source"] and ok[i]]
        row["at_threshold"] = float((p[idx] >= threshold).mean())
    out["logo_copies"] = {name: band_rates(q, rows, band) for name, q in pc.items()}
    if holdout:
        ps, psc = _scores(X, rows, seen_folds(rows, seed=seed), C, copies, test_copies)
        out["seen"] = band_rates(ps, rows, band)
        out["seen_copies"] = {name: band_rates(q, rows, band) for name, q in psc.items()}
        hard = []
        for f in source_folds(rows):
            pf = out_of_fold(X, rows, [f], C, progress=False, copies=copies)
            for row in band_rates(pf, rows, band):
                idx = [i for i, r in enumerate(rows) if r.source == row["source"] and not np.isnan(pf[i])]
                hard.append(dict(row, fold=f["name"], at_threshold=float((pf[idx] >= threshold).mean())))
        out["sources"] = hard

    # which generator
    gens = list(GENERATORS)
    correct, unseen = {}, {}
    pg = np.full((len(rows), len(gens)), np.nan)
    for f in generator_folds(rows, seed=seed):
        head = fit_generator(X, rows, f["train"], gens, C, copies)
        pg[f["test"]] = linear_probs(X[f["test"]], head)
    ai_idx = [i for i, r in enumerate(rows) if r.source in gens]
    known_top = np.nanmax(pg[ai_idx], 1)
    unseen_top = []
    for f in folds:
        rest = [g for g in gens if g != f["name"]]
        head = fit_generator(X, rows, f["train"], rest, C, copies)
        t = [i for i in f["test"] if rows[i].origin == "ai"]
        top = linear_probs(X[t], head).max(1)
        unseen[f["name"]] = top
        unseen_top.append(top)
    gmin = generator_threshold(known_top, np.concatenate(unseen_top))
    for g in gens:
        idx = [i for i in ai_idx if rows[i].source == g]
        pred = np.array(gens)[np.nanargmax(pg[idx], 1)]
        conf = np.nanmax(pg[idx], 1) >= gmin
        correct[g] = {"n": len(idx), "top1": float((pred == g).mean()),
                      "named_correctly": float(((pred == g) & conf).mean()),
                      "unknown_when_left_out": float((unseen[g] < gmin).mean())}
    out["generators"] = correct
    out["generator_min"] = gmin

    tg = test_groups(rows, test_fraction, seed)
    train = [i for i, r in enumerate(rows) if r.group not in tg]
    out["test"] = [i for i, r in enumerate(rows) if r.group in tg]
    out["head"] = fit_origin(X, rows, train, C, copies)
    out["generator_head"] = fit_generator(X, rows, train, gens, C, copies)
    out["num_train"] = len(train)
    return out


def trust_note(evaluation: dict) -> str:
    """Markdown lines for "when not to trust it": what the detector has seen and the measured rates of its
    recipe on generators and painters left out of training (``evaluation.json`` of an origin folder)."""
    name = lambda s: GENERATOR_NAMES.get(s, {"best_artworks": "Best Artworks (WikiArt via Kaggle)",  # noqa: E731
                                             "wikiart": "WikiArt"}.get(s, s))
    logo = [r for r in evaluation.get("logo", []) if r["source"] != "sd15"]
    if not logo:
        return ""
    ai = [r for r in logo if r["origin"] == "ai"]
    human = [r for r in logo if r["origin"] == "human"]
    lines = [f"- It has seen images of {', '.join(name(r['source']) for r in ai)}, and digitised paintings from "
             f"{' and '.join(name(r['source']) for r in human)}. Nothing else.",
             "- Left out of training, each generator was still called AI for: "
             + ", ".join(f"{name(r['source'])} {r['ai']:.0%}" for r in ai)
             + ". A generator it has never seen may be missed (answered *undecided* or *human-made*).",
             "- Paintings by painters it never saw were called AI: "
             + ", ".join(f"{name(r['source'])} {r['ai']:.1%}" for r in human)
             + " (and *undecided* for " + ", ".join(f"{r['undecided']:.0%}" for r in human) + ")."]
    hard = [r for r in evaluation.get("sources", []) if r["origin"] == "human" and r["fold"] == f"without {r['source']}"]
    if hard:
        lines.append("- A whole source of paintings it never saw fares worse: "
                     + ", ".join(f"{name(r['source'])} {r['ai']:.0%} called AI" for r in hard)
                     + ". Paintings of other traditions, photos of paintings and scans were not measured.")
    seen = {k: [r for r in v if r["origin"] == "ai" and r["source"] != "sd15"]
            for k, v in (evaluation.get("seen_copies") or {}).items()}
    retaken = next((v for k, v in seen.items() if k.startswith("source")), None)
    if retaken:
        lines.append("- Every AI image it learned from was 512 px; it also learned from crops and re-takes of them "
                     "(cropped, resized, recompressed). Re-taken that way, new images of the generators it has seen "
                     "were still called AI: " + ", ".join(f"{name(r['source'])} {r['ai']:.0%}" for r in retaken)
                     + ". An image of a generator it has never seen is most often answered *undecided*.")
    return "\n".join(lines)
