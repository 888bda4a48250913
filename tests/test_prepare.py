"""scripts/prepare_dataset.py on small folders cut from the real shared data, and the shipped cards."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import load_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _front_matter(path):
    text = Path(path).read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture(scope="module")
def small_sources(data_dir, tmp_path_factory):
    """Human: 3 styles x 2 artists x 3 paintings. AI: the same 3 styles, 2 prompted artists each, plus an
    exact copy of a human painting and a resized, re-encoded copy of another (a near duplicate)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("sources")
    human, ai = root / "human", root / "ai"
    styles = {"Baroque": ["Rembrandt", "Caravaggio"], "Impressionism": ["Claude_Monet", "Alfred_Sisley"],
              "Surrealism": ["Salvador_Dali", "Rene_Magritte"]}
    for style, artists in styles.items():
        (human / style).mkdir(parents=True)
        for a in artists:
            for f in sorted((data_dir / "paintings_styles10" / style).glob(f"{a}_*.jpg"))[:3]:
                shutil.copy(f, human / style / f.name)
        (ai / style).mkdir(parents=True)
        for f in sorted((data_dir / "ai_sd15_styles15" / style).glob("*.jpg"))[:8]:
            shutil.copy(f, ai / style / f.name)
    shutil.copy(data_dir / "ai_sd15_styles15" / "metadata.tsv", ai / "metadata.tsv")
    exact_src = sorted((human / "Baroque").glob("Rembrandt_*.jpg"))[0]
    shutil.copy(exact_src, ai / "Baroque" / "Copy_Exact_0.jpg")
    near_src = sorted((human / "Impressionism").glob("Claude_Monet_*.jpg"))[0]
    im = Image.open(near_src).convert("RGB")
    im.resize((200, 200), Image.BICUBIC).save(ai / "Impressionism" / "Copy_Near_0.jpg", quality=70)
    return human, ai, exact_src, near_src


def test_prepare_merges_dedupes_splits_and_cards(small_sources, tmp_path):
    import datasets

    human, ai, exact_src, near_src = small_sources
    prep = load_script("prepare_dataset")
    out = tmp_path / "prepared"
    args = prep.parse_args([
        "--source", f"path={human},origin=human,label=style,name=human_small,source=StyleSleuths (WikiArt),license=CC BY-NC-SA 4.0",
        "--source", f"path={ai},origin=ai,label=style,name=ai_small",
        "--resolution", "64", "--split", "group", "--test-size", "0.34", "--val-size", "0", "--output-dir", str(out),
        "--save-format", "parquet,disk", "--license", "cc-by-nc-sa-4.0", "--pretty-name", "tiny merge"])
    res = prep.main(args)

    dups = json.loads((out / "duplicates.json").read_text())
    kinds = {Path(d["dropped"]).name: (Path(d["kept"]).name, d["kind"]) for d in dups}
    assert kinds["Copy_Exact_0.jpg"] == (exact_src.name, "exact")
    assert kinds["Copy_Near_0.jpg"] == (near_src.name, "near")
    n_in = len(list(human.rglob("*.jpg"))) + len(list(ai.rglob("*.jpg")))
    assert res["images"] == n_in - len(dups)

    dd = datasets.load_dataset("parquet", data_files={s: str(out / "data" / f"{s}-00000-of-00001.parquet")
                                                      for s in ("train", "test")})
    assert set(dd["train"].column_names) == {"image", "style", "artist", "origin", "generator", "source"}
    row = dd["train"][0]
    assert row["image"].size == (64, 64) and row["image"].format == "JPEG"
    every = datasets.concatenate_datasets([dd["train"], dd["test"]])
    assert set(every["origin"]) == {"human", "ai"}
    ai_rows = every.filter(lambda ex: ex["origin"] == "ai" and not ex["artist"].startswith("Copy"))
    assert set(ai_rows["generator"]) <= {"Deliberate 2.0", "DreamShaper 3.2"} and ai_rows["generator"]
    assert "Bernini_Gian_Lorenzo" in set(every["artist"]) or "Dyck_Anthonis_van" in set(every["artist"])
    assert set(every.filter(lambda ex: ex["origin"] == "human")["generator"]) == {""}
    # artist-disjoint splits, every style in both
    assert not set(dd["train"]["artist"]) & set(dd["test"]["artist"])
    assert set(dd["train"]["style"]) == set(dd["test"]["style"]) == {"Baroque", "Impressionism", "Surrealism"}
    on_disk = datasets.load_from_disk(str(out / "disk"))
    assert on_disk["test"].num_rows == dd["test"].num_rows

    meta = _front_matter(out / "README.md")
    assert meta["task_categories"] == ["image-classification"] and meta["license"] == "cc-by-nc-sa-4.0"
    assert {d["split"] for d in meta["configs"][0]["data_files"]} == {"train", "test"}
    splits = {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]}
    assert splits == {"train": dd["train"].num_rows, "test": dd["test"].num_rows}
    card = (out / "README.md").read_text()
    assert "human_small" in card and "StyleSleuths (WikiArt)" in card and "Deliberate 2.0" in card
    assert "artist-disjoint" in card
    assert yaml.safe_load((out / "prepare_config.yaml").read_text())["resolution"] == 64


def test_common_labels_and_source_errors(small_sources, tmp_path):
    human, ai, _, _ = small_sources
    prep = load_script("prepare_dataset")
    with pytest.raises(prep.DataError, match="origin must be human or ai"):
        prep.parse_source(f"path={human},origin=robot")
    with pytest.raises(prep.DataError, match="no such folder"):
        prep.parse_source(f"path={tmp_path / 'missing'}")
    with pytest.raises(prep.DataError, match="unknown keys"):
        prep.parse_source(f"path={human},colour=blue")
    assert prep.parse_source(str(human))["path"] == human


def test_real_overlap_between_styles10_and_artists50_is_found(data_dir, tmp_path):
    """The data README says the two human sets share paintings (Delacroix, Velazquez, Seurat): all found."""
    prep = load_script("prepare_dataset")
    a, b = tmp_path / "styles10", tmp_path / "artists50"
    n_a = 0
    for f in (data_dir / "paintings_styles10").rglob("*.jpg"):
        if f.name.startswith(("Eugene_Delacroix", "Diego_Velazquez", "Georges_Seurat")):
            (a / f.parent.name).mkdir(parents=True, exist_ok=True)
            (a / f.parent.name / f.name).symlink_to(f)
            n_a += 1
    for name in ("Eugene_Delacroix", "Diego_Velazquez", "Georges_Seurat"):
        (b / name).mkdir(parents=True)
        for f in (data_dir / "paintings_artists50" / name).glob("*.jpg"):
            (b / name / f.name).symlink_to(f)
    args = prep.parse_args(["--source", f"path={b},origin=human,label=artist", "--source", f"path={a},origin=human,label=style",
                            "--resolution", "32", "--label-column", "artist", "--split", "random",
                            "--output-dir", str(tmp_path / "out")])
    prep.main(args)
    dups = json.loads((tmp_path / "out" / "duplicates.json").read_text())
    exact_from_a = [d for d in dups if d["kind"] == "exact" and "/styles10/" in d["dropped"]]
    assert n_a > 50 and len(exact_from_a) == n_a  # every styles10 painting of these artists is in artists50
    import datasets
    test = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "train-*.parquet"))["train"]
    # the kept artists50 rows got their style filled in from the dropped styles10 copies
    styles = set(test.filter(lambda ex: ex["artist"] == "Georges_Seurat")["style"])
    assert "Post-Impressionism" in styles


def test_shipped_cards_of_shared_sets_are_current(data_dir, tmp_path):
    prep = load_script("prepare_dataset")
    sets = ["paintings_styles10", "paintings_artists50", "ai_sd15_styles15"]
    args = prep.parse_args(["--describe", *[str(data_dir / s) for s in sets],
                            "--card-info", str(ROOT / "dataset_cards" / "shared_sets.yaml"), "--output-dir", str(tmp_path)])
    prep.main(args)
    for s in sets:
        fresh = (tmp_path / f"{s}.md").read_text().replace(str(data_dir), "../shared/data")
        assert fresh == (ROOT / "dataset_cards" / f"{s}.md").read_text(), f"dataset_cards/{s}.md is stale; re-render it"
    meta = _front_matter(ROOT / "dataset_cards" / "paintings_styles10.md")
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 1191
    assert len(meta["dataset_info"]["features"][1]["dtype"]["class_label"]["names"]) == 10
    assert "85 images" in (ROOT / "dataset_cards" / "paintings_styles10.md").read_text()
    ai = _front_matter(ROOT / "dataset_cards" / "ai_sd15_styles15.md")
    assert "synthetic" in ai["tags"] and ai["dataset_info"]["splits"][0]["num_examples"] == 668
