"""Which style, which painter: the data, the measurement and the fit of the ``style`` and ``artist`` models.

Both are linear heads on cached tokens of the frozen CLIP ViT-B/16 image tower
(:class:`artlens.models.BlockTokens`), every image brought to one form first
(:func:`artlens.data.canonical_image`), in training, in measurement and in prediction, as for ``origin``.

``style`` learns 17 styles from two sources: the 10 of ``paintings_styles10`` (37 painters, with their
paintings in ``paintings_artists50``) and 8 WikiArt styles of ``wikiart_styles11`` (457 painters;
``Naive_Art_Primitivism`` is ``Primitivism_Naive``, ``Pointillism`` is taught as ``Post-Impressionism``).
What is measured is what a visitor meets: painters the model has never seen (:func:`painter_folds`: every
painter in one fold), next to new paintings by painters it knows (:func:`random_folds`). Those out-of-fold
scores also choose the rule that says "none of these styles" (:func:`choose_min_score`), measured by
leaving whole styles out of training (:func:`open_set`).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import DataError, group_from_filename, perturb
from .detect import fit_linear, generator_threshold, person, softmax
from .files import atomic_path
from .images import open_image

__all__ = ["Painting", "STYLES", "WIKIART_STYLES", "UNTRAINED_PAINTERS", "style_images", "artist_images", "near_duplicates",
           "painter_folds", "random_folds", "held_out", "perturbed_copies", "painting_weights", "training_rows", "fit_ridge",
           "fit_temperature", "out_of_fold", "accuracy_table", "open_set", "choose_min_score", "open_set_rates",
           "test_painters", "measure_and_fit_style", "perturbed_accuracy", "measure_and_fit_artist"]

STYLE_SETS = ("paintings_styles10", "paintings_artists50")
WIKIART = "wikiart_styles11"
# wikiart_styles11 folder -> style label; the other folders keep their names
WIKIART_STYLES = {"Naive_Art_Primitivism": "Primitivism_Naive", "Pointillism": "Post-Impressionism"}
STYLES = ("Abstract_Expressionism", "Baroque", "Cubism", "Expressionism", "Fauvism", "High_Renaissance",
          "Impressionism", "Minimalism", "Northern_Renaissance", "Pop_Art", "Post-Impressionism",
          "Primitivism_Naive", "Rococo", "Romanticism", "Surrealism", "Symbolism", "Ukiyo_e")
# paintings_artists50 painters outside paintings_styles10, so the style model never trains on them (wikiart_styles11
# has none of them either): painter -> (movement in artists.csv, its style label, or None where the movement is not
# one of STYLES). Matisse and Manet are left out: artists.csv gives them two movements each.
UNTRAINED_PAINTERS = {
    "Andy_Warhol": ("Pop Art", "Pop_Art"), "Jackson_Pollock": ("Abstract Expressionism", "Abstract_Expressionism"),
    "Pablo_Picasso": ("Cubism", "Cubism"), "Andrei_Rublev": ("Byzantine", None),
    "Giotto_di_Bondone": ("Proto Renaissance", None), "Sandro_Botticelli": ("Early Renaissance", None),
    "El_Greco": ("Mannerism", None), "Gustave_Courbet": ("Realism", None),
    "Diego_Rivera": ("Social Realism, Muralism", None), "Kazimir_Malevich": ("Suprematism", None),
    "Piet_Mondrian": ("Neoplasticism", None)}


@dataclass(frozen=True)
class Painting:
    path: str
    label: str       # style or painter
    source: str      # "best_artworks" (paintings_styles10 + paintings_artists50) or "wikiart"
    group: str       # the painter, as artlens.detect.person spells it


def _best_artworks(data: Path) -> list[tuple[Path, str]]:
    """(file, painter) of both Best Artworks sets, the files they share once."""
    missing = [s for s in STYLE_SETS if not (data / s).is_dir()]
    if missing:
        raise DataError(f"{data} lacks {', '.join(missing)}; pass the folder that holds the shared data sets")
    out, seen = [], set()
    for s in STYLE_SETS:
        for f in sorted((data / s).glob("*/*.jpg")):
            if f.name not in seen:
                seen.add(f.name)
                out.append((f, group_from_filename(f.name)))
    return out


def style_images(data: str | Path) -> list[Painting]:
    """Every painting the ``style`` model learns from: the Best Artworks paintings of the 37 painters of
    ``paintings_styles10`` (each painter's style is the folder it sits in) and every ``wikiart_styles11``
    painting (its style is WikiArt's, per painting; :data:`WIKIART_STYLES`)."""
    data = Path(data)
    if not (data / WIKIART / "metadata.tsv").is_file():
        raise DataError(f"{data / WIKIART / 'metadata.tsv'} is missing; pass the folder that holds the shared data sets")
    style_of = {group_from_filename(f.name): f.parent.name for f in (data / STYLE_SETS[0]).glob("*/*.jpg")}
    out = [Painting(str(f), style_of[p], "best_artworks", person(p)) for f, p in _best_artworks(data) if p in style_of]
    with open(data / WIKIART / "metadata.tsv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            out.append(Painting(str(data / WIKIART / r["file"]), WIKIART_STYLES.get(r["label"], r["label"]), "wikiart",
                                person(r["artist"])))
    unknown = sorted({r.label for r in out} - set(STYLES))
    if unknown:
        raise DataError(f"styles {unknown} are not among the 17 the style model knows")
    return out


def artist_images(data: str | Path) -> list[Painting]:
    """Every Best Artworks painting of the 50 painters of ``paintings_artists50`` (label: its folder name)."""
    data = Path(data)
    names = {p.name for p in (data / STYLE_SETS[1]).iterdir() if p.is_dir()} if (data / STYLE_SETS[1]).is_dir() else set()
    return [Painting(str(f), p, "best_artworks", person(p)) for f, p in _best_artworks(data) if p in names]


# ---------------------------------------------------------------- near duplicates

def near_duplicates(X: np.ndarray, rows: Sequence[Painting], threshold: float = 0.9) -> tuple[list[int], list[tuple]]:
    """``(keep, pairs)``: the rows to keep, and every pair ``(i, j, cosine)`` at or above ``threshold``.

    ``X``: standardised-per-feature class tokens of all blocks (:func:`artlens.detect.token_matrix`). The
    same painting twice (within a source or in both) is one row: a pair with the same label keeps its
    first row, a pair whose labels disagree keeps neither (which label would be right?).
    """
    Z = (X - X.mean(0)) / (X.std(0) + 1e-6)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True) + 1e-12
    drop, pairs = set(), []
    for start in range(0, len(Z), 1024):
        s = Z[start:start + 1024] @ Z.T
        for a, b in zip(*np.nonzero(s >= threshold)):
            i, j = start + int(a), int(b)
            if i < j:
                pairs.append((i, j, float(s[a, b])))
    for i, j, _ in pairs:
        drop.add(j)
        if rows[i].label != rows[j].label:
            drop.add(i)
    return [i for i in range(len(rows)) if i not in drop], pairs


# ---------------------------------------------------------------- folds

def painter_folds(rows: Sequence[Painting], k: int = 5, seed: int = 0) -> list[dict]:
    """``k`` folds in which every painter's paintings (over both sources) are in one fold's test rows."""
    rng = np.random.default_rng(seed)
    fold_of = {str(g): j % k for j, g in enumerate(rng.permutation(sorted({r.group for r in rows})))}
    f = np.array([fold_of[r.group] for r in rows])
    return [{"name": f"painters {i}", "train": np.nonzero(f != i)[0], "test": np.nonzero(f == i)[0]} for i in range(k)]


def random_folds(rows: Sequence[Painting], k: int = 5, seed: int = 0) -> list[dict]:
    """``k`` folds stratified by label, painters shared (new paintings by painters the model knows)."""
    rng = np.random.default_rng(seed)
    f = np.zeros(len(rows), int)
    for lab in sorted({r.label for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.label == lab]
        f[rng.permutation(idx)] = np.arange(len(idx)) % k
    return [{"name": f"random {i}", "train": np.nonzero(f != i)[0], "test": np.nonzero(f == i)[0]} for i in range(k)]


def held_out(rows: Sequence[Painting], fraction: float = 0.15, seed: int = 0) -> list[int]:
    """A seeded ``fraction`` of each label's rows: a fixed test split of new paintings by known painters."""
    rng = np.random.default_rng(seed)
    out = []
    for lab in sorted({r.label for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.label == lab]
        out += sorted(rng.permutation(idx)[:max(1, round(fraction * len(idx)))].tolist())
    return sorted(out)


def perturbed_copies(files: Sequence[str], ops: Sequence[tuple[str, float]], out_dir: str | Path) -> list[str]:
    """Each file with the ``(kind, value)`` changes of :func:`artlens.data.perturb` applied in turn, written
    losslessly (PNG) under ``out_dir``, so that :func:`artlens.features.image_tokens` caches their tokens
    like any image's. A copy already there is reused."""
    out = []
    for f in files:
        dst = Path(out_dir) / f"{Path(f).parent.name}__{Path(f).stem}.png"
        if not dst.exists():
            img = open_image(f)
            for kind, value in ops:
                img = perturb(img, kind, value)
            with atomic_path(dst) as tmp:
                img.save(tmp, format="PNG")
        out.append(str(dst))
    return out


# ---------------------------------------------------------------- linear heads

def painting_weights(rows: Sequence[Painting], power: float = 0.5) -> np.ndarray:
    """Sample weights under which every label weighs the same and, within a label, a painter with n
    paintings weighs n ** ``power`` (0: every painter alike, 1: every painting alike): the few prolific
    Best Artworks painters of a style may not drown its many WikiArt painters with a few paintings each."""
    w = np.zeros(len(rows))
    labels = sorted({r.label for r in rows})
    for lab in labels:
        idx = [i for i, r in enumerate(rows) if r.label == lab]
        count: dict[str, int] = {}
        for i in idx:
            count[rows[i].group] = count.get(rows[i].group, 0) + 1
        wi = np.array([count[rows[i].group] ** (power - 1.0) for i in idx])
        w[idx] = wi / wi.sum()
    return w * len(rows) / max(w.sum(), 1e-12)


def training_rows(X: np.ndarray, rows: Sequence[Painting], idx: Sequence[int], extra: Sequence[np.ndarray] = (),
                  power: float = 0.5) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(features, labels, weights)`` of rows ``idx`` and of their training copies in ``extra`` (same rows,
    other views), every copy weighted like its original (:func:`painting_weights`)."""
    sub = [rows[i] for i in idx]
    return (np.concatenate([X[idx]] + [E[idx] for E in extra]), [r.label for r in sub] * (1 + len(extra)),
            np.tile(painting_weights(sub, power), 1 + len(extra)))


def fit_ridge(X: np.ndarray, y: Sequence[str], classes: Sequence[str], weights: np.ndarray | None = None,
              lam: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ridge regression onto one-hot labels, on standardised features, returned as ``(W, b)`` of one
    linear layer on the raw features (the standardisation folded in). A closed form: a few seconds where a
    logistic regression on the same rows takes a minute, and 1-3 points better on unseen painters (docs/
    experiments.md section 11). Its scores become probabilities through :func:`fit_temperature`."""
    w = np.ones(len(X)) if weights is None else np.asarray(weights, float)
    mu = X.mean(0)
    sd = X.std(0) + 1e-6
    Z = (X - mu) / sd
    Y = np.eye(len(classes))[[list(classes).index(c) for c in y]]
    zm = (Z * w[:, None]).sum(0) / w.sum()
    ym = (Y * w[:, None]).sum(0) / w.sum()
    Zc = Z - zm
    A = Zc.T @ (Zc * w[:, None]) + lam * w.sum() * np.eye(Z.shape[1])
    coef = np.linalg.solve(A, Zc.T @ ((Y - ym) * w[:, None])).T
    coef_raw = coef / sd
    icpt = ym - coef @ zm - coef_raw @ mu
    return coef_raw.astype(np.float32), icpt.astype(np.float32)


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The factor on :func:`fit_ridge`'s scores whose softmax has the lowest log-loss on (out-of-fold) ``scores``
    with true class indices ``y``."""
    best, best_t = np.inf, 1.0
    for t in np.geomspace(0.5, 200, 120):
        p = softmax(scores * t)[np.arange(len(y)), y]
        nll = -np.log(np.clip(p, 1e-12, None)).mean()
        if nll < best:
            best, best_t = nll, float(t)
    return best_t


def out_of_fold(X: np.ndarray, rows: Sequence[Painting], folds: Sequence[dict], classes: Sequence[str],
                lam: float = 1.0, power: float = 0.5, extra: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Scores ``(N, len(classes))`` of each row from the fold that tested it (NaN where no fold did). Rows whose
    label is not in ``classes`` never train (a style left out) but are scored. ``extra``: more feature arrays
    of the same rows (training copies, e.g. re-takes), added to the training rows only."""
    s = np.full((len(rows), len(classes)), np.nan, np.float32)
    for fold in folds:
        tr = [i for i in fold["train"] if rows[i].label in classes]
        Xt, yt, wt = training_rows(X, rows, tr, extra, power)
        W, b = fit_ridge(Xt, yt, classes, wt, lam)
        t = np.asarray(fold["test"])
        s[t] = X[t] @ W.T + b
    return s


def accuracy_table(scores: np.ndarray, rows: Sequence[Painting], folds: Sequence[dict], classes: Sequence[str]) -> dict:
    """Accuracy of out-of-fold ``scores``: per fold, per label and per source."""
    y = np.array([list(classes).index(r.label) for r in rows])
    pred = np.nanargmax(np.nan_to_num(scores, nan=-np.inf), 1)
    ok = pred == y
    src = np.array([r.source for r in rows])
    return {"folds": [float(ok[f["test"]].mean()) for f in folds],
            "per_label": {c: float(ok[y == i].mean()) for i, c in enumerate(classes) if (y == i).any()},
            "per_source": {s: float(ok[src == s].mean()) for s in sorted(set(src))},
            "accuracy": float(ok.mean())}


# ---------------------------------------------------------------- "none of these styles"

def open_set(X: np.ndarray, rows: Sequence[Painting], folds: Sequence[dict], classes: Sequence[str],
             lam: float = 1.0, power: float = 0.5, extra: Sequence[np.ndarray] = ()) -> dict:
    """Top probability of heads trained without one style, for each style in turn: ``{style: (unknown, known)}``
    with ``unknown`` the top probability of that style's paintings (a style the head has never seen) and
    ``known`` that of the other styles' paintings, all from the painter folds (painters never seen either)."""
    out = {}
    for held in classes:
        rest = [c for c in classes if c != held]
        s = out_of_fold(X, rows, folds, rest, lam, power, extra)
        known = np.array([r.label != held for r in rows])
        y = np.array([rest.index(r.label) if r.label != held else 0 for r in rows])
        p = softmax(s * fit_temperature(s[known], y[known])).max(1)
        out[held] = (p[~known], p[known])
    return out


def choose_min_score(scores: dict, without: Sequence[str] = ()) -> float:
    """The top probability below which a painting is "none of these styles": the value that best separates
    (mean of the two rates) the paintings of a left-out style from those of the known styles, averaged over the
    left-out styles of :func:`open_set` but ``without``, every style alike. Pooling their paintings instead
    gives a nearly flat objective whose peak jumps when one style is left out (docs/experiments.md section 18)."""
    use = [s for s in scores if s not in without]
    return generator_threshold([scores[s][1] for s in use], [scores[s][0] for s in use])


def open_set_rates(scores: dict) -> dict:
    """Per left-out style: the rule chosen on the other styles (:func:`choose_min_score`), the share of its
    paintings flagged and the share of known-style paintings wrongly flagged at that rule."""
    out = {}
    for s, (unknown, known) in scores.items():
        t = choose_min_score(scores, without=[s])
        out[s] = {"min_score": t, "flagged": float((unknown < t).mean()), "known_flagged": float((known < t).mean()),
                  "n": int(len(unknown))}
    return out


# ---------------------------------------------------------------- the whole measurement and the shipped head

def test_painters(rows: Sequence[Painting], fraction: float = 0.05, seed: int = 0) -> set[str]:
    """A seeded ``fraction`` (at least one) of the WikiArt painters of each style, kept out of the shipped model
    for the tests. Best Artworks painters all train: each is a fifth to a half of its style."""
    rng = np.random.default_rng(seed)
    out: set[str] = set()
    for lab in sorted({r.label for r in rows if r.source == "wikiart"}):
        groups = sorted({r.group for r in rows if r.label == lab and r.source == "wikiart"} - out)
        out.update(str(g) for g in rng.permutation(groups)[:max(1, round(fraction * len(groups)))])
    return out


def measure_and_fit_style(X: np.ndarray, rows: Sequence[Painting], extra: Sequence[np.ndarray] = (), lam: float = 1.0,
                          power: float = 0.5, k: int = 5, seeds: Sequence[int] = (0, 1, 2), test_fraction: float = 0.05,
                          seed: int = 0, open_set_styles: bool = True) -> dict:
    """Everything the shipped style head and its card need, from features ``X`` of ``rows`` (``extra``: training
    copies of the same rows).

    - ``painters`` / ``known``: :func:`accuracy_table` of :func:`painter_folds` / :func:`random_folds` for each of
      ``seeds`` (``k`` folds each), and ``mean``/``std`` over all those folds.
    - ``temperature``: the factor on the head's scores (fitted on the first seed's painter folds).
    - ``open_set`` (:func:`open_set_rates`) and ``min_score``: the rule, chosen on every left-out style.
    - ``head``: ``(W, b)`` (temperature folded in) fitted on every row but those of :func:`test_painters`
      (``test``: their indices).
    """
    classes = sorted({r.label for r in rows})
    y = np.array([classes.index(r.label) for r in rows])
    out: dict = {"classes": classes, "lam": lam, "power": power, "k": k, "seeds": list(seeds), "n": len(rows)}
    for name, make in (("painters", painter_folds), ("known", random_folds)):
        runs = []
        for s in seeds:
            folds = make(rows, k, s)
            scores = out_of_fold(X, rows, folds, classes, lam, power, extra)
            if name == "painters" and s == seeds[0]:
                out["temperature"] = fit_temperature(scores, y)
                first = (folds, scores)
            runs.append(accuracy_table(scores, rows, folds, classes))
        acc = [a for r in runs for a in r["folds"]]
        out[name] = {"mean": float(np.mean(acc)), "std": float(np.std(acc)), "runs": runs,
                     "per_label": {c: float(np.mean([r["per_label"][c] for r in runs])) for c in classes},
                     "per_source": {s: float(np.mean([r["per_source"][s] for r in runs])) for s in runs[0]["per_source"]}}
    if open_set_styles:
        scores = open_set(X, rows, first[0], classes, lam, power, extra)
        out["open_set"] = open_set_rates(scores)
        out["min_score"] = choose_min_score(scores)
        p = softmax(first[1] * out["temperature"])
        top = p.max(1)
        out["known_flagged"] = float((top < out["min_score"]).mean())
        right = p.argmax(1) == y
        out["accuracy_kept"] = float(right[top >= out["min_score"]].mean())
    tp = test_painters(rows, test_fraction, seed)
    train = [i for i, r in enumerate(rows) if r.group not in tp]
    out["test"] = [i for i, r in enumerate(rows) if r.group in tp]
    Xt, yt, wt = training_rows(X, rows, train, extra, power)
    W, b = fit_ridge(Xt, yt, classes, wt, lam)
    out["head"] = (W * out["temperature"], b * out["temperature"])
    out["num_train"] = len(train)
    return out


def perturbed_accuracy(X: np.ndarray, rows: Sequence[Painting], folds: Sequence[dict], classes: Sequence[str],
                       sample: Sequence[int], cases: dict, lam: float = 1.0, power: float = 0.5,
                       extra: Sequence[np.ndarray] = ()) -> dict:
    """Accuracy on rows ``sample``, each scored by the fold head that did not train on it: clean, and for each
    ``cases`` entry (name -> features of the same ``sample`` rows, changed before the backbone saw them)."""
    sample = np.asarray(sample)
    y = np.array([list(classes).index(rows[i].label) for i in sample])
    pos = {int(i): j for j, i in enumerate(sample)}
    cases = {"clean": X[sample], **cases}
    pred = {c: np.zeros(len(sample), int) for c in cases}
    for fold in folds:
        t = [pos[int(i)] for i in fold["test"] if int(i) in pos]
        if not t:
            continue
        tr = [i for i in fold["train"] if rows[i].label in classes]
        Xt, yt, wt = training_rows(X, rows, tr, extra, power)
        W, b = fit_ridge(Xt, yt, classes, wt, lam)
        for c, Xc in cases.items():
            pred[c][t] = (Xc[t] @ W.T + b).argmax(1)
    return {c: {"accuracy": float((p == y).mean()), "n": int(len(y))} for c, p in pred.items()}


def measure_and_fit_artist(X: np.ndarray, rows: Sequence[Painting], extra: Sequence[np.ndarray] = (), C: float = 0.1,
                           test_size: float = 0.15, seeds: Sequence[int] = (0, 1, 2), ship_test_size: float = 0.03,
                           seed: int = 0, cases: dict | None = None) -> dict:
    """Everything the shipped artist head and its card need, from features ``X`` of ``rows`` (``extra``: training
    copies of the same rows). Heads are logistic regressions (:func:`artlens.detect.fit_linear`; a ridge
    regression is 4 points worse here), every painter weighted alike.

    - ``known``: accuracy on :func:`held_out` ``test_size`` of each painter's paintings, one split per ``seeds``
      (``mean``/``std``, ``per_label``); ``cases``: name -> features of the first split's test rows changed before
      the backbone saw them (e.g. upscaled and re-encoded), scored by that split's head.
    - ``head``: ``(W, b)`` fitted on all rows but :func:`held_out` ``ship_test_size`` (``test``: their indices).
    """
    classes = sorted({r.label for r in rows})

    def fit(train):
        Xt, yt, wt = training_rows(X, rows, train, extra, power=1.0)
        return fit_linear(Xt, yt, classes, wt, C=C, max_iter=500)

    y = np.array([classes.index(r.label) for r in rows])
    out: dict = {"classes": classes, "C": C, "test_size": test_size, "seeds": list(seeds), "n": len(rows)}
    accs, per = [], []
    for s in seeds:
        test = np.array(held_out(rows, test_size, s))
        W, b = fit(np.setdiff1d(np.arange(len(rows)), test))
        ok = (X[test] @ W.T + b).argmax(1) == y[test]
        accs.append(float(ok.mean()))
        per.append({c: float(ok[y[test] == i].mean()) for i, c in enumerate(classes)})
        if s == seeds[0] and cases:
            out["cases"] = {name: {"accuracy": float(((Xc @ W.T + b).argmax(1) == y[test]).mean()), "n": len(test)}
                            for name, Xc in {"clean": X[test], **cases}.items()}
    out["known"] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "splits": accs,
                    "per_label": {c: float(np.mean([p[c] for p in per])) for c in classes}}
    out["test"] = held_out(rows, ship_test_size, seed)
    train = np.setdiff1d(np.arange(len(rows)), out["test"])
    out["head"] = fit(train)
    out["num_train"] = len(train)
    return out
