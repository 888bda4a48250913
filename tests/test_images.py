import io

import numpy as np
import pytest
from PIL import Image

from artlens.images import ImageError, list_images, open_image


def _save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_modes_become_rgb(tmp_path):
    rgb = Image.fromarray((np.random.RandomState(0).rand(40, 60, 3) * 255).astype(np.uint8))
    cases = {
        "cmyk.jpg": rgb.convert("CMYK"),
        "rgba.png": rgb.convert("RGBA"),
        "pal.png": rgb.convert("P"),
        "grey.png": rgb.convert("L"),
        "bw.png": rgb.convert("1"),
    }
    for name, img in cases.items():
        out = open_image(_save(img, tmp_path / name))
        assert out.mode == "RGB" and out.size == (60, 40), name
    arr16 = (np.linspace(0, 65535, 40 * 60).reshape(40, 60)).astype(np.uint16)
    out = open_image(_save(Image.fromarray(arr16), tmp_path / "16.png"))
    a = np.asarray(out)
    assert out.mode == "RGB" and a.min() == 0 and a.max() == 255  # rescaled, not clipped to white


def test_transparent_becomes_white(tmp_path):
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert np.asarray(open_image(_save(img, tmp_path / "t.png")))[0, 0].tolist() == [255, 255, 255]


def test_exif_rotation_and_animation(tmp_path):
    img = Image.new("RGB", (30, 10), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    out = open_image(_save(img, tmp_path / "rot.jpg", exif=exif))
    assert out.size == (10, 30)
    frames = [Image.new("RGB", (16, 16), c) for c in ("blue", "green")]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    px = np.asarray(open_image(p))[0, 0]
    assert px[2] > 200 and px[1] < 50  # first frame (blue)


@pytest.mark.parametrize("content,msg", [(b"", "empty"), (b"hello, I am text", "not an image"),
                                         (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "")])
def test_bad_files_raise_image_error(tmp_path, content, msg):
    p = tmp_path / "x.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=msg):
        open_image(p)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray((np.random.RandomState(1).rand(200, 200, 3) * 255).astype(np.uint8)).save(buf, "JPEG")
    p = tmp_path / "trunc.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated|corrupt"):
        open_image(p)


def test_huge_and_tiny_and_wide(tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (20000, 20000), (10, 120, 200)).save(big, quality=50)
    out = open_image(big)
    assert max(out.size) <= 4096 and out.mode == "RGB"
    assert open_image(_save(Image.new("RGB", (1, 1)), tmp_path / "one.png")).size == (1, 1)
    out = open_image(_save(Image.new("RGB", (8000, 300)), tmp_path / "pano.jpg"))
    assert out.size[0] == 4096 and abs(out.size[0] / out.size[1] - 8000 / 300) < 0.5


def test_arrays_and_missing(tmp_path):
    assert open_image(np.zeros((5, 7), dtype=np.uint8)).size == (7, 5)
    assert open_image(np.random.rand(3, 9, 11)).size == (11, 9)  # CHW floats
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(ImageError):
        list_images([tmp_path / "nothing"])


def test_real_paintings_open(data_dir):
    files = list_images(data_dir / "paintings_styles10" / "Impressionism")[:5]
    assert len(files) == 5
    for f in files:
        assert open_image(f).mode == "RGB"
