"""Bad and unusual uploads never break the Space: each gets a correct answer (converted properly) or a
clear message (gr.Error carrying the ImageError text), and the app keeps serving the next request."""
from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from artlens import space as app
from tests.test_space import predictors  # noqa: F401 - the module-scoped fixture


def big_jpeg(w: int, h: int) -> bytes:
    """A real w x h greyscale JPEG (uniform grey) built without holding w*h pixels in memory:
    every 8x8 block of a flat image codes as 'DC diff 0, end of block' (6 bits with the standard
    Huffman tables), so the scan is a repeated 3-byte pattern for 4 blocks."""
    assert w % 32 == 0 and h % 8 == 0
    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, "JPEG", quality=50)
    b = bytearray(buf.getvalue())
    sof = b.index(b"\xff\xc0")
    b[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    sos = b.index(b"\xff\xda")
    head = bytes(b[:sos + 2 + int.from_bytes(b[sos + 2:sos + 4], "big")])
    return head + b"\x28\xa2\x8a" * (w // 8 * h // 8 // 4) + b"\xff\xd9"


def big_png_header(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels (decompression-bomb shape); the pixels are never decoded."""
    buf = io.BytesIO()
    Image.new("1", (8, 8)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    i = b.index(b"IHDR")
    b[i + 4:i + 12] = struct.pack(">II", w, h)
    b[i + 17:i + 21] = struct.pack(">I", zlib.crc32(bytes(b[i:i + 17])))
    return bytes(b)


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def make_inputs(d: Path, painting: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    raw = painting.read_bytes()
    rgb = Image.open(painting).convert("RGB")
    out = {}
    out["truncated.jpg"] = d / "truncated.jpg"
    out["truncated.jpg"].write_bytes(raw[: len(raw) // 3])
    corrupt = bytearray(raw)
    corrupt[600:4000] = np.random.default_rng(0).integers(0, 256, 3400, dtype=np.uint8).tobytes()
    out["corrupt.jpg"] = d / "corrupt.jpg"
    out["corrupt.jpg"].write_bytes(bytes(corrupt))
    out["text.jpg"] = d / "text.jpg"
    out["text.jpg"].write_text("This is a shopping list, not a painting.\n" * 20)
    out["zero.jpg"] = d / "zero.jpg"
    out["zero.jpg"].write_bytes(b"")
    out["one.png"] = _save(Image.new("RGB", (1, 1), (200, 30, 30)), d / "one.png")
    out["huge.jpg"] = d / "huge.jpg"
    out["huge.jpg"].write_bytes(big_jpeg(20000, 20000))
    out["huge.png"] = d / "huge.png"
    out["huge.png"].write_bytes(big_png_header(20000, 20000))
    out["cmyk.jpg"] = _save(rgb.convert("CMYK"), d / "cmyk.jpg", quality=95)
    grad = (np.linspace(0, 60000, 64 * 48).reshape(48, 64)).astype(np.uint16)
    out["16bit.png"] = _save(Image.fromarray(grad, "I;16"), d / "16bit.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.r_[np.zeros(128), np.full(rgb.width - 128, 255)], (rgb.height, 1)).astype(np.uint8)))
    out["rgba.png"] = _save(rgba, d / "rgba.png")
    out["palette.png"] = _save(rgb.convert("P", palette=Image.ADAPTIVE, colors=32), d / "palette.png")
    out["gray.jpg"] = _save(rgb.convert("L"), d / "gray.jpg")
    frames = [Image.new("RGB", (64, 48), c) for c in ((0, 0, 255), (255, 0, 0), (0, 255, 0))]
    out["anim.gif"] = d / "anim.gif"
    frames[0].save(out["anim.gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    out["exif.jpg"] = _save(rgb.resize((120, 60)), d / "exif.jpg", exif=exif)
    out["panorama.jpg"] = _save(rgb.resize((12000, 200)), d / "panorama.jpg", quality=80)
    return out


# name -> error message pattern (None: must be answered, with the check in test_handlers_on_bad_inputs)
EXPECTED = {
    "truncated.jpg": r"corrupt or truncated",
    "corrupt.jpg": None,  # libjpeg decodes damaged scans with grey/garbled blocks; either outcome is fine
    "text.jpg": r"not an image file",
    "zero.jpg": r"empty \(0 bytes\)",
    "one.png": None,
    "huge.jpg": None,
    "huge.png": r"20000x20000 pixels is more than",
    "cmyk.jpg": None,
    "16bit.png": None,
    "rgba.png": None,
    "palette.png": None,
    "gray.jpg": None,
    "anim.gif": None,
    "exif.jpg": None,
    "panorama.jpg": None,
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, data_dir):
    painting = sorted((data_dir / "paintings_styles10" / "Impressionism").glob("*.jpg"))[0]
    return make_inputs(tmp_path_factory.mktemp("bad_inputs"), painting)


def _preview_checks(name: str, img: Image.Image):
    a = np.asarray(img)
    assert img.mode == "RGB" and max(img.size) <= app.DISPLAY_SIDE
    if name == "huge.jpg":
        assert img.size == (1024, 1024) and a.min() == a.max() == 128
    if name == "one.png":
        assert img.size == (1, 1) and tuple(a[0, 0]) == (200, 30, 30)
    if name == "16bit.png":
        assert a.min() < 10 and a.max() > 245  # rescaled to 8 bit, not clipped to white
    if name == "rgba.png":
        assert (a[:, :100] == 255).all()  # transparent pixels become white paper
    if name == "anim.gif":
        assert tuple(a[10, 10]) == (0, 0, 255)  # the first frame
    if name == "exif.jpg":
        assert img.size == (60, 120)  # turned upright
    if name == "panorama.jpg":
        assert img.size[0] == 1024 and img.size[1] < 30
    if name == "cmyk.jpg":
        assert a.std() > 10  # real colours, not a flat or inverted blank


@pytest.mark.parametrize("name", list(EXPECTED))
def test_handlers_on_bad_inputs(name, inputs, predictors):  # noqa: F811
    path = str(inputs[name])
    pattern = EXPECTED[name]
    try:
        shown, again = app.preview(path)
    except gr.Error as e:
        assert pattern is not None or name == "corrupt.jpg", f"{name}: unexpected error {e}"
        if pattern:
            assert __import__("re").search(pattern, str(e)), f"{name}: unclear message: {e}"
        assert name in str(e) and str(inputs[name].parent) not in str(e)  # the user's file name, not a temp path
        for fn in (lambda: app.classify(predictors, path), lambda: app.detect(predictors, path)):
            with pytest.raises(gr.Error):
                fn()
        return
    assert pattern is None, f"{name}: expected an error matching {pattern!r}, got an image"
    _preview_checks(name, shown)
    style, artist, _ = app.classify(predictors, path)
    assert math.isclose(sum(style.values()), 1, abs_tol=1e-4) and len(artist) == 50
    probs, verdict = app.detect(predictors, path)
    assert set(probs) == {"human", "ai"} and "Verdict" in verdict


def test_explain_on_extreme_shapes(inputs, predictors):  # noqa: F811
    models = app.explain_models(predictors)
    for name in ("one.png", "panorama.jpg"):
        ov, info = app.explain_image(models, str(inputs[name]), "style", "gradcam", None)
        assert ov.size == app.preview(str(inputs[name]))[0].size and "Grad-CAM" in info


def test_open_image_decodes_a_20000px_jpeg_at_reduced_scale(inputs):
    from artlens.images import open_image

    img = open_image(inputs["huge.jpg"])  # draft() at 1/4 scale, then fitted to MAX_SIDE
    assert img.size == (4096, 4096) and img.getextrema() == ((128, 128),) * 3


@pytest.mark.slow
def test_client_bad_inputs_then_a_good_painting(space_url, inputs, data_dir):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(space_url, verbose=False)
    for name in ("text.jpg", "zero.jpg", "truncated.jpg", "huge.png"):
        with pytest.raises(AppError, match=EXPECTED[name]) as err:
            client.predict(handle_file(str(inputs[name])), api_name="/classify")
        assert name in str(err.value)
    for name in ("cmyk.jpg", "anim.gif", "exif.jpg", "huge.jpg", "16bit.png"):
        origin, verdict = client.predict(handle_file(str(inputs[name])), api_name="/detect")
        assert {c["label"] for c in origin["confidences"]} == {"human", "ai"} and "Verdict" in verdict
    overlay, _ = client.predict(handle_file(str(inputs["exif.jpg"])), "style", "gradcam", app.TOP_CLASS,
                                api_name="/explain")
    assert Image.open(overlay).size == (60, 120)
    good = sorted((data_dir / "paintings_styles10" / "Symbolism").glob("*.jpg"))[0]
    style, artist, probs = client.predict(handle_file(str(good)), api_name="/classify")
    assert style["label"] in probs["style"] and math.isclose(sum(probs["artist"].values()), 1, abs_tol=1e-4)
