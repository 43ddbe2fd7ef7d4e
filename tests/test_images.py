"""How custom_dataloader reads one image file: every pixel mode Pillow opens becomes the right 8-bit
RGB picture or is refused in one line, and the EXIF orientation is applied.

Each file is generated here with Pillow in the mode under test (the test checks that Pillow opens it
in that mode), and the expected pixels come from NumPy formulas written here: 16-bit scaling,
compositing onto white, the plain CMYK and JFIF YCbCr formulas, CIE L* for LAB, colorsys for HSV, and
NumPy's own rotations for the EXIF orientations.
"""
import colorsys

import numpy as np
import pytest
from PIL import Image

from harness.cli import DataError
from harness.images import load_rgb_image, read_image_size, to_rgb

# 16-bit grey levels around the rounding points of v * 255 / 65535 = v / 257.
LEVELS_16 = np.array([[0, 128, 129, 257, 385, 386, 32896, 65535],
                      [1, 1000, 20000, 40000, 50000, 60000, 65407, 65408]], dtype=np.int64)


def saved(path, image, fmt, **kwargs):
    """Save `image` to `path` in `fmt` and check that Pillow opens it in the mode under test."""
    image.save(path, format=fmt, **kwargs)
    with Image.open(path) as reopened:
        assert reopened.mode == image.mode, (reopened.mode, image.mode)
    return path


def loaded(path):
    image = load_rgb_image(path)
    assert image.mode == "RGB"
    return np.asarray(image, dtype=np.int64)  # (H, W, 3)


def gray(values):
    """(H, W) grey levels -> the (H, W, 3) RGB picture of them."""
    return np.repeat(np.asarray(values)[:, :, None], 3, axis=2)


def over_white(color, alpha):
    """Reference compositing in floating point: color * a + white * (1 - a), rounded."""
    a = alpha[..., None] / 255.0
    return np.rint(color * a + 255.0 * (1 - a)).astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# More than 8 bits per pixel
# ---------------------------------------------------------------------------------------------------
def image_16bit(mode):
    if mode == "I":  # 32-bit integer: how Pillow before 10.3 opened 16-bit PNGs
        return Image.fromarray(LEVELS_16.astype(np.int32))
    dtype = ">u2" if mode == "I;16B" else "<u2"
    height, width = LEVELS_16.shape
    return Image.frombytes(mode, (width, height), LEVELS_16.astype(dtype).tobytes())


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16B", "TIFF"), ("I", "TIFF")])
def test_16bit_grey_is_scaled_not_clipped(tmp_path, mode, fmt):
    path = saved(tmp_path / "deep.png", image_16bit(mode), fmt)
    expected = gray(np.rint(LEVELS_16 * 255 / 65535))
    assert np.array_equal(loaded(path), expected)
    assert (loaded(path) == 255).mean() < 0.2  # clipping made almost every pixel white


def test_16bit_little_endian_tiff(tmp_path):
    path = tmp_path / "little.tif"
    image_16bit("I;16L").save(path, format="TIFF")  # Pillow opens it as I;16, its little-endian name
    assert np.array_equal(loaded(path), gray(np.rint(LEVELS_16 * 255 / 65535)))


@pytest.mark.parametrize("bad_value", [70000, -1])
def test_32bit_integers_outside_16_bits_are_refused(tmp_path, bad_value):
    values = np.array([[0, 100], [bad_value, 65535]], dtype=np.int32)
    path = saved(tmp_path / "int32.tif", Image.fromarray(values), "TIFF")
    low, high = min(0, bad_value), max(65535, bad_value)
    with pytest.raises(DataError, match=rf"^{path}: I pixels span {low}\.\.{high}; integer pixels are read "
                                        rf"as 16-bit \(0\.\.65535\)$"):
        load_rgb_image(path)


def test_float_pixels_in_0_1_are_scaled(tmp_path):
    values = np.array([[0.0, 0.25, 0.5, 1.0], [0.1, 0.3, 0.75, 0.999]], dtype=np.float32)
    path = saved(tmp_path / "float.tif", Image.fromarray(values), "TIFF")
    # 0.25 * 255 = 63.75 -> 64; 0.5 * 255 = 127.5 -> 128 (halves round up); 0.999 * 255 = 254.7 -> 255
    assert np.array_equal(loaded(path), gray([[0, 64, 128, 255], [26, 77, 191, 255]]))


@pytest.mark.parametrize("bad_value, message", [
    (2.0, r"32-bit float pixels span 0\.\.2; only 0\.\.1 is read \(as 0\.\.255\)"),
    (-0.5, r"32-bit float pixels span -0\.5\.\.1; only 0\.\.1 is read \(as 0\.\.255\)"),
    (np.nan, r"32-bit float pixels include NaN or infinite values"),
])
def test_float_pixels_outside_0_1_are_refused(tmp_path, bad_value, message):
    values = np.array([[0.0, 1.0], [0.5, bad_value]], dtype=np.float32)
    path = saved(tmp_path / "float.tif", Image.fromarray(values), "TIFF")
    with pytest.raises(DataError, match=rf"^{path}: {message}$"):
        load_rgb_image(path)


def test_one_bit_pixels_are_black_and_white(tmp_path):
    bits = np.random.default_rng(0).integers(0, 2, size=(6, 10)).astype(bool)
    path = saved(tmp_path / "bits.png", Image.fromarray(bits), "PNG")
    assert np.array_equal(loaded(path), gray(bits * 255))


# ---------------------------------------------------------------------------------------------------
# Transparency: composited onto white in every mode
# ---------------------------------------------------------------------------------------------------
RNG = np.random.default_rng(1)
COLOR = RNG.integers(0, 256, size=(6, 10, 3))
ALPHA = np.concatenate([[[0, 255, 1, 254, 127, 128, 64, 192, 10, 245]],
                        RNG.integers(0, 256, size=(5, 10))])


def test_rgba_is_composited_onto_white(tmp_path):
    rgba = np.concatenate([COLOR, ALPHA[..., None]], axis=2).astype(np.uint8)
    path = saved(tmp_path / "rgba.png", Image.fromarray(rgba), "PNG")
    assert np.array_equal(loaded(path), over_white(COLOR, ALPHA))


def test_grey_with_alpha_is_composited_onto_white(tmp_path):
    levels = COLOR[..., 0]
    la = Image.merge("LA", [Image.fromarray(channel.astype(np.uint8)) for channel in (levels, ALPHA)])
    path = saved(tmp_path / "la.png", la, "PNG")
    assert np.array_equal(loaded(path), over_white(gray(levels), ALPHA))


def palette_image():
    """(P image, its (6, 10, 3) colours): four palette colours, index i at the columns c with c % 4 = i."""
    palette = np.array([(200, 30, 40), (10, 250, 90), (0, 0, 0), (120, 120, 255)])
    indices = np.tile(np.arange(10) % 4, (6, 1)).astype(np.uint8)
    image = Image.frombytes("P", (10, 6), indices.tobytes())
    image.putpalette(palette.ravel().tolist())
    return image, palette[indices]


def test_palette_with_a_transparent_index_is_composited_onto_white(tmp_path):
    image, colors = palette_image()
    path = saved(tmp_path / "p.png", image, "PNG", transparency=2)  # black (index 2) is transparent
    expected = colors.copy()
    expected[:, 2::4] = 255
    assert np.array_equal(loaded(path), expected)


def test_palette_with_alpha_is_composited_onto_white(tmp_path):
    image, colors = palette_image()
    pa = Image.merge("PA", [image, Image.fromarray(ALPHA.astype(np.uint8))])
    pa.putpalette(image.getpalette())
    path = saved(tmp_path / "pa.tif", pa, "TIFF")
    assert np.array_equal(loaded(path), over_white(colors, ALPHA))


@pytest.mark.parametrize("mode, key", [("RGB", (200, 30, 40)), ("L", 200), ("I;16", 200 * 257)])
def test_a_transparent_colour_becomes_white(tmp_path, mode, key):
    hidden = ALPHA > 128  # where the key colour goes
    if mode == "RGB":
        pixels = np.where(hidden[..., None], key, COLOR).astype(np.uint8)
        expected = np.where((pixels == key).all(axis=2)[..., None], 255, pixels)
    else:
        scale = 257 if mode == "I;16" else 1
        pixels = np.where(hidden, key, COLOR[..., 0] * scale).astype(np.uint16 if scale > 1 else np.uint8)
        expected = gray(np.where(pixels == key, 255, np.rint(pixels / scale)))
    path = saved(tmp_path / "keyed.png", Image.fromarray(pixels), "PNG", transparency=key)
    assert np.array_equal(loaded(path), expected)


def test_opaque_pixels_are_unchanged(tmp_path):
    rgba = np.concatenate([COLOR, np.full((6, 10, 1), 255)], axis=2).astype(np.uint8)
    path = saved(tmp_path / "opaque.png", Image.fromarray(rgba), "PNG")
    assert np.array_equal(loaded(path), COLOR)


# ---------------------------------------------------------------------------------------------------
# Other colour spaces
# ---------------------------------------------------------------------------------------------------
def test_cmyk_by_the_plain_formula(tmp_path):
    cmyk = RNG.integers(0, 256, size=(6, 10, 4))
    path = saved(tmp_path / "cmyk.tif", Image.fromarray(cmyk.astype(np.uint8), mode="CMYK"), "TIFF")
    ink, black = cmyk[..., :3], cmyk[..., 3:]
    assert np.array_equal(loaded(path), np.rint((255 - ink) * (255 - black) / 255))


def test_ycbcr_by_the_jfif_formula(tmp_path):
    ycc = RNG.integers(16, 240, size=(6, 10, 3)).astype(np.float64)
    ycc[0, :3] = [[0, 128, 128], [128, 128, 128], [255, 128, 128]]  # greys come out exact
    path = saved(tmp_path / "ycc.tif", Image.fromarray(ycc.astype(np.uint8), mode="YCbCr"), "TIFF")
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=2)
    expected = np.clip(np.rint(rgb), 0, 255)
    result = loaded(path)
    assert np.array_equal(result[0, :3], gray([[0, 128, 255]])[0])
    assert np.abs(result - expected).max() <= 1  # Pillow computes in fixed point


def test_lab_is_converted_to_srgb(tmp_path):
    # Greys (a* = b* = 0): sRGB grey from CIE L*. The pixels hold L* * 255 / 100 and signed a*, b*.
    stored_l = np.array([0, 40, 100, 136, 180, 255])
    lab = np.stack([stored_l, np.zeros(6), np.zeros(6)], axis=1)[None]  # (1, 6, 3)
    lab = np.concatenate([lab, [[[136, 72, 0]] * 6]])  # second row: a* = +72, towards red
    path = saved(tmp_path / "lab.tif", Image.fromarray(lab.astype(np.uint8), mode="LAB"), "TIFF")
    l_star = stored_l * 100 / 255
    luminance = np.where(l_star > 8, ((l_star + 16) / 116) ** 3, l_star / 903.3)
    srgb = np.where(luminance <= 0.0031308, 12.92 * luminance, 1.055 * luminance ** (1 / 2.4) - 0.055)
    result = loaded(path)
    assert np.abs(result[0] - gray([np.rint(255 * srgb)])[0]).max() <= 2
    red, green, blue = result[1, 0]
    assert red > green + 100 and red > blue


def test_hsv_in_memory_by_colorsys():
    # No file format stores HSV; an HSV image made in memory goes through the same conversion.
    hsv = RNG.integers(0, 256, size=(4, 5, 3))
    hsv[0, :3] = [[0, 255, 255], [85, 255, 255], [0, 0, 200]]  # red, green, grey
    result = np.asarray(to_rgb(Image.fromarray(hsv.astype(np.uint8), mode="HSV"), "mem"), dtype=np.int64)
    expected = np.array([[colorsys.hsv_to_rgb(*(pixel / 255)) for pixel in row] for row in hsv]) * 255
    assert np.array_equal(result[0, :3], [[255, 0, 0], [0, 255, 0], [200, 200, 200]])
    assert np.abs(result - expected).max() <= 1.5  # Pillow computes in integers


def test_mode_pillow_cannot_convert_is_refused_in_one_line():
    with pytest.raises(DataError, match=r"^photo\.png: pixel mode La cannot be converted to RGB$"):
        to_rgb(Image.new("La", (2, 2)), "photo.png")


# ---------------------------------------------------------------------------------------------------
# EXIF orientation
# ---------------------------------------------------------------------------------------------------
def upright_picture():
    """(128, 96, 3): a 96-wide, 128-high picture of 16-pixel blocks that no turn or mirror leaves alike."""
    rng = np.random.default_rng(2)
    blocks = rng.integers(0, 256, size=(8, 6, 3))
    return np.kron(blocks, np.ones((16, 16, 1), dtype=np.int64)).astype(np.uint8)


def anti_transpose(pixels):
    return pixels[::-1, ::-1].transpose(1, 0, 2)


# orientation -> (how a camera stores an upright picture, how a viewer turns it back), in NumPy terms
ORIENTATIONS = {
    1: (lambda p: p, lambda p: p),
    2: (lambda p: p[:, ::-1], lambda p: p[:, ::-1]),
    3: (lambda p: p[::-1, ::-1], lambda p: p[::-1, ::-1]),
    4: (lambda p: p[::-1], lambda p: p[::-1]),
    5: (lambda p: p.transpose(1, 0, 2), lambda p: p.transpose(1, 0, 2)),
    6: (lambda p: np.rot90(p, 1), lambda p: np.rot90(p, -1)),
    7: (anti_transpose, anti_transpose),
    8: (lambda p: np.rot90(p, -1), lambda p: np.rot90(p, 1)),
}


def exif_jpeg(path, pixels, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format="JPEG", quality=100, subsampling=0,
                                                      exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_exif_orientation_is_applied(tmp_path, orientation):
    store, view = ORIENTATIONS[orientation]
    upright = upright_picture()
    path = exif_jpeg(tmp_path / "phone.jpg", store(upright), orientation)
    with Image.open(path) as raw:  # the stored pixels, decoded but not turned
        stored = np.asarray(raw.convert("RGB"), dtype=np.int64)
        assert raw.size == ((128, 96) if orientation >= 5 else (96, 128))

    result = loaded(path)
    assert result.shape == (128, 96, 3) and read_image_size(path) == (96, 128)
    assert np.array_equal(result, view(stored))  # exactly the decoded pixels, turned
    assert np.abs(result - upright).max() <= 12  # and the picture is upright (JPEG rounding aside)


def test_orientation_given_in_xmp_only(tmp_path):
    # Pillow's getexif() also reads tiff:Orientation from a JPEG's XMP packet.
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/">'
           b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
           b'</rdf:RDF></x:xmpmeta>')
    upright = upright_picture()
    path = tmp_path / "xmp.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(path, format="JPEG", quality=100,
                                                                     subsampling=0, xmp=xmp)
    with Image.open(path) as raw:
        if "xmp" not in raw.info:
            pytest.skip("this Pillow writes no XMP into JPEGs")
    assert read_image_size(path) == (96, 128)
    assert np.abs(loaded(path) - upright).max() <= 12


def test_invalid_orientation_value_is_ignored(tmp_path):
    upright = upright_picture()
    path = exif_jpeg(tmp_path / "odd.jpg", upright, 9)
    assert read_image_size(path) == (96, 128)
    assert np.abs(loaded(path) - upright).max() <= 12


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image\n")
    for read in (load_rgb_image, read_image_size):
        with pytest.raises(DataError, match=rf"^{tmp_path / 'notes.jpg'}: cannot read image \("):
            read(tmp_path / "notes.jpg")
        with pytest.raises(DataError, match=rf"^{tmp_path / 'absent.jpg'}: image not found$"):
            read(tmp_path / "absent.jpg")
