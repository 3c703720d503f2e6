"""Images in every mode Pillow reads decode to the right 8-bit RGB, or fail with the file named."""
import re

import numpy as np
import pytest
from PIL import Image

from lora_vl.data.encode import BadRecord
from lora_vl.data.images import load_rgb, to_rgb


def saved(tmp_path, img: Image.Image, name: str, **kw) -> Image.Image:
    img.save(tmp_path / name, **kw)
    return Image.open(tmp_path / name)


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(16, 16)  # 0 .. 65535
    img = saved(tmp_path, Image.fromarray(ramp), "g16.png")
    assert img.mode.startswith("I")  # Pillow reads it as 16-bit
    out = np.asarray(to_rgb(img))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], np.arange(256, dtype=np.uint8).reshape(16, 16))  # v / 257
    assert np.array_equal(out[..., 0], out[..., 2])


def test_float_image_in_unit_range_is_scaled():
    img = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), "F")
    assert to_rgb(img).getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_and_palette_and_greyscale(tmp_path):
    cmyk = saved(tmp_path, Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "c.jpg", quality=100)
    r, g, b = to_rgb(cmyk).getpixel((1, 1))
    assert r > 230 and g < 25 and b < 25  # pure red
    pal = saved(tmp_path, Image.new("RGB", (4, 4), (10, 200, 30)).quantize(colors=4), "p.png")
    assert pal.mode == "P" and to_rgb(pal).getpixel((0, 0)) == (10, 200, 30)
    assert to_rgb(Image.new("L", (2, 2), 77)).getpixel((0, 0)) == (77, 77, 77)


def test_transparent_pixels_become_white_not_their_stored_colour(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    out = to_rgb(saved(tmp_path, rgba, "a.png"))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (0, 0, 255)
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    out = to_rgb(saved(tmp_path, pal, "pt.png", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (255, 0, 0)


def test_animated_image_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    img = Image.open(tmp_path / "anim.gif")
    img.seek(1)  # left on the second frame
    r, g, b = to_rgb(img).getpixel((0, 0))
    assert r > 200 and b < 50


@pytest.mark.parametrize("content, message", [(b"", "is empty (0 bytes)"), (b"plain text", "is not a readable image")])
def test_bad_files_are_named(tmp_path, content, message):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(BadRecord, match=rf"rec 7: image file .*x.png {re.escape(message)}"):
        load_rgb(tmp_path / "x.png", "rec 7")
