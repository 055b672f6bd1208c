"""Readers and writers of sschsr.data.io on the real data beside the repo and on files made in tmp_path."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio
import scipy.io
from affine import Affine
from PIL import Image
from rasterio.crs import CRS

import sschsr.data.io.raster
import sschsr.data.io.writers
from sschsr.data.io import (
    Cube,
    GeoInfo,
    find_cubes,
    read_cube,
    read_rgb,
    write_geotiff,
    write_npy,
    write_png,
)
from sschsr.errors import InputError

# the test files made here are plain images on purpose
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

CAVE_SCENES = [
    "balloons", "beads", "cd", "chart_and_stuffed_toy", "clay", "cloth", "face", "fake_and_real_peppers",
    "feathers", "jelly_beans", "real_and_fake_apples", "watercolors",
]  # fmt: skip


def _band_pngs(folder: Path, scene: str, n: int, size=(6, 5), bits: int = 16, names=None) -> np.ndarray:
    """Write ``<scene>_ms_<k>.png`` band images; returns the cube they encode, (H, W, n) in [0, 1]."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    top = 65535 if bits == 16 else 255
    codes = rng.integers(0, top + 1, size=(*size, n)).astype(np.uint16 if bits == 16 else np.uint8)
    for k in range(n):
        name = names[k] if names else f"{scene}_ms_{k + 1:02d}.png"
        Image.fromarray(codes[..., k]).save(folder / name)
    return codes.astype(np.float32) / top


def _files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------------------------------
# CAVE


@pytest.mark.parametrize("scene", CAVE_SCENES)
def test_cave_scene_reads(shared_data, scene):
    cube = read_cube(shared_data / "cave" / f"{scene}_ms")
    assert isinstance(cube, Cube)
    assert cube.data.shape == (512, 512, 31) and cube.data.dtype == np.float32
    assert cube.data.min() >= 0 and cube.data.max() <= 1 and cube.data.max() > 0.05
    np.testing.assert_allclose(cube.wavelengths, np.arange(400, 701, 10))
    assert cube.name == f"{scene}_ms" and cube.geo is None and cube.valid is None
    # watercolors ships 8-bit RGBA band images: first channel / 255
    assert cube.scale_factor == (255.0 if scene == "watercolors" else 65535.0)


def test_cave_watercolors_takes_first_channel(shared_data):
    folder = shared_data / "cave" / "watercolors_ms"
    band = np.asarray(Image.open(folder / "watercolors_ms_10.png"))
    assert band.shape == (512, 512, 4)
    cube = read_cube(folder)
    np.testing.assert_array_equal(cube.data[..., 9], band[..., 0].astype(np.float32) / np.float32(255))


def test_cave_nested_layout_and_numeric_band_order(tmp_path):
    # official zips nest <scene>_ms/<scene>_ms/; unpadded numbers test numeric (not lexical) order
    outer = tmp_path / "toy_ms"
    names = [f"toy_ms_{k}.png" for k in range(1, 13)]
    expected = _band_pngs(outer / "toy_ms", "toy", 12, names=names)
    (outer / "toy_ms" / "toy_RGB.bmp").write_bytes(b"ignored")
    for folder in (outer, outer / "toy_ms"):
        cube = read_cube(folder)
        assert cube.data.shape == (6, 5, 12)
        np.testing.assert_array_equal(cube.data, expected)
        assert cube.wavelengths is None  # only 31 bands are known to be 400-700 nm
        assert cube.name == "toy_ms"


def test_cave_nested_with_symlinked_band_files(tmp_path):
    src = tmp_path / "src"
    expected = _band_pngs(src, "toy", 31, bits=8)
    inner = tmp_path / "toy_ms" / "toy_ms"
    inner.mkdir(parents=True)
    for f in src.iterdir():
        (inner / f.name).symlink_to(f)
    cube = read_cube(tmp_path / "toy_ms")
    np.testing.assert_array_equal(cube.data, expected)
    np.testing.assert_allclose(cube.wavelengths, 400 + 10 * np.arange(31))
    assert cube.scale_factor == 255.0


def test_cave_missing_band(tmp_path):
    _band_pngs(tmp_path / "toy_ms", "toy", 5)
    (tmp_path / "toy_ms" / "toy_ms_03.png").unlink()
    with pytest.raises(InputError, match=r"toy_ms.*missing \[3\]"):
        read_cube(tmp_path / "toy_ms")


def test_cave_mixed_sizes(tmp_path):
    _band_pngs(tmp_path / "toy_ms", "toy", 3)
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "toy_ms" / "toy_ms_02.png")
    with pytest.raises(InputError, match=r"toy_ms.*differ in size"):
        read_cube(tmp_path / "toy_ms")


def test_folder_without_bands(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty.*no CAVE band images"):
        read_cube(tmp_path / "empty")


# --------------------------------------------------------------------------------------------------
# MATLAB files on the real data


def test_houston(shared_data):
    path = shared_data / "remote" / "houston2018_crop" / "houston_dataset.mat"
    cube = read_cube(path)
    # rgbImg 512x512x3 holds as many values as the cube: the cube wins by its band count
    assert cube.meta["key"] == "hyprImg"
    assert cube.data.shape == (128, 128, 48) and cube.data.dtype == np.float32
    assert cube.scale_factor == 65535.0 and 0 <= cube.data.min() and cube.data.max() <= 1
    raw = scipy.io.loadmat(path)["hyprImg"]
    np.testing.assert_allclose(cube.data * 65535, raw, rtol=1e-6)


def test_paris(shared_data):
    path = shared_data / "remote" / "paris_hyperion_ali" / "paris_data_hs_ms.mat"
    cube = read_cube(path)
    assert cube.meta["key"] == "HSim" and cube.data.shape == (72, 72, 128)
    assert cube.scale_factor == 1.0  # float data kept as stored
    assert read_cube(path, key="MSim").data.shape == (72, 72, 9)


def test_pavia_wavelengths_from_wl(shared_data):
    cube = read_cube(shared_data / "remote" / "pavia_reg_simulated" / "reg_pavia_dataset.mat")
    assert cube.meta["key"] == "I1" and cube.data.shape == (80, 50, 103)  # not the larger rgb1
    assert cube.wavelengths.shape == (103,)
    assert cube.wavelengths[0] == pytest.approx(430) and cube.wavelengths[-1] == pytest.approx(860)


def test_samson(shared_data):
    cube = read_cube(shared_data / "remote" / "samson" / "Samson.mat")
    assert cube.data.shape == (95, 95, 156) and cube.scale_factor == 1.0
    assert 0 <= cube.data.min() and cube.data.max() <= 1


@pytest.mark.parametrize("key", [None, "Y"])
def test_jasper_ridge_bands_by_pixels(shared_data, key):
    path = shared_data / "remote" / "jasper_ridge" / "jasperRidge2_R198.mat"
    cube = read_cube(path, key=key)
    assert cube.data.shape == (100, 100, 198) and cube.scale_factor == 5000.0  # its maxValue
    y = scipy.io.loadmat(path)["Y"]
    # MATLAB column-major: pixel (r, c) is column r + 100 c
    for r, c in [(0, 0), (3, 0), (0, 3), (57, 21)]:
        np.testing.assert_allclose(cube.data[r, c], y[:, r + 100 * c] / 5000.0, rtol=1e-6)


def test_non_cube_mat_in_shared_data(shared_data):
    path = shared_data / "remote" / "paris_hyperion_ali" / "ikonos_spec_resp.mat"
    with pytest.raises(InputError, match="ikonos_spec_resp.mat.*nRow"):
        read_cube(path)


# --------------------------------------------------------------------------------------------------
# MATLAB files made here


def _write_v73(path: Path, **variables: np.ndarray) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5, column-major, so h5py sees the axes reversed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            value = np.atleast_2d(value)
            ds = f.create_dataset(name, data=value.T)
            ds.attrs["MATLAB_class"] = np.bytes_("uint16" if value.dtype == np.uint16 else "double")
        f.create_dataset("note", data=np.frombuffer(b"hi", np.uint8).astype(np.uint16)[:, None]).attrs[
            "MATLAB_class"
        ] = np.bytes_("char")
    with open(path, "r+b") as f:  # MATLAB's text header in the user block
        f.write(b"MATLAB 7.3 MAT-file".ljust(116))


def test_mat_v73_orientation_matches_v5(tmp_path):
    rng = np.random.default_rng(1)
    cube = rng.random((7, 5, 4))
    wl = np.array([0.45, 0.55, 0.65, 0.75])  # um
    scipy.io.savemat(tmp_path / "v5.mat", {"cube": cube, "wl": wl})
    _write_v73(tmp_path / "v73.mat", cube=cube, wl=wl)
    a, b = read_cube(tmp_path / "v5.mat"), read_cube(tmp_path / "v73.mat")
    assert a.data.shape == b.data.shape == (7, 5, 4)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.data, cube.astype(np.float32))
    np.testing.assert_allclose(b.wavelengths, [450, 550, 650, 750])


def test_mat_v73_bands_by_pixels_with_size_variables(tmp_path):
    rng = np.random.default_rng(2)
    hwc = rng.integers(0, 1000, size=(4, 6, 3)).astype(np.uint16)
    y = hwc.reshape(24, 3, order="F").T  # bands x pixels, MATLAB column-major
    _write_v73(tmp_path / "y.mat", Y=y, nRow=np.array(4.0), nCol=np.array(6.0), maxValue=np.array(1000.0))
    cube = read_cube(tmp_path / "y.mat")
    assert cube.scale_factor == 1000.0
    np.testing.assert_allclose(cube.data, hwc / 1000.0, rtol=1e-6)


def test_mat_key_and_layout(tmp_path):
    chw = np.random.default_rng(3).random((4, 6, 5)).astype(np.float32)
    scipy.io.savemat(tmp_path / "c.mat", {"a": chw, "small": np.zeros((2, 2, 2))})
    cube = read_cube(tmp_path / "c.mat", key="a", layout="chw")
    np.testing.assert_array_equal(cube.data, chw.transpose(1, 2, 0))
    with pytest.raises(InputError, match=r"c\.mat.*no numeric variable 'zz'"):
        read_cube(tmp_path / "c.mat", key="zz")


def test_mat_integer_normalised_by_dtype_max(tmp_path):
    raw = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    scipy.io.savemat(tmp_path / "u8.mat", {"x": raw})
    cube = read_cube(tmp_path / "u8.mat")
    assert cube.scale_factor == 255.0
    np.testing.assert_allclose(cube.data, raw / 255.0, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# NumPy


def test_npy_hwc_and_chw(tmp_path):
    hwc = np.random.default_rng(4).random((6, 5, 3)).astype(np.float32)
    np.save(tmp_path / "hwc.npy", hwc)
    np.save(tmp_path / "chw.npy", hwc.transpose(2, 0, 1))
    np.testing.assert_array_equal(read_cube(tmp_path / "hwc.npy").data, hwc)
    np.testing.assert_array_equal(read_cube(tmp_path / "chw.npy", layout="chw").data, hwc)
    assert read_cube(tmp_path / "hwc.npy").name == "hwc"


def test_npy_uint16_normalised(tmp_path):
    raw = np.full((2, 2, 4), 65535, np.uint16)
    np.save(tmp_path / "u16.npy", raw)
    cube = read_cube(tmp_path / "u16.npy")
    assert cube.scale_factor == 65535.0 and np.all(cube.data == 1.0)


def test_npz_key_largest_and_chw(tmp_path):
    rng = np.random.default_rng(5)
    big, small = rng.random((8, 8, 6)), rng.random((2, 2, 6))
    np.savez(tmp_path / "a.npz", small=small, big=big, label=np.zeros((8, 8)))
    np.testing.assert_allclose(read_cube(tmp_path / "a.npz").data, big.astype(np.float32))
    np.testing.assert_allclose(read_cube(tmp_path / "a.npz", key="small").data, small.astype(np.float32))
    np.savez(tmp_path / "c.npz", x=big.transpose(2, 0, 1))
    np.testing.assert_allclose(read_cube(tmp_path / "c.npz", layout="chw").data, big.astype(np.float32))


# --------------------------------------------------------------------------------------------------
# GeoTIFF / ENVI


def _geo(c: int) -> GeoInfo:
    return GeoInfo(
        crs=CRS.from_epsg(32615),
        transform=Affine(2.0, 0.0, 271000.0, 0.0, -2.0, 3290000.0),
        nodata=-9999.0,
        band_descriptions=tuple(f"band {k}" for k in range(c)),
        wavelengths=np.linspace(400, 1000, c),
    )


def test_geotiff_roundtrip(tmp_path):
    data = np.random.default_rng(6).random((9, 7, 5)).astype(np.float32)
    data[2, 3, 1] = -9999.0  # one band at nodata marks the pixel invalid
    geo = _geo(5)
    write_geotiff(tmp_path / "x.tif", data, geo)
    assert _files_in(tmp_path) == ["x.tif"]
    cube = read_cube(tmp_path / "x.tif")
    assert cube.data.shape == (9, 7, 5) and cube.data.dtype == np.float32
    assert cube.geo.crs == geo.crs and cube.geo.transform == geo.transform and cube.geo.nodata == -9999.0
    assert cube.geo.band_descriptions == geo.band_descriptions
    np.testing.assert_allclose(cube.wavelengths, geo.wavelengths)
    assert cube.valid.shape == (9, 7) and cube.valid.sum() == 9 * 7 - 1 and not cube.valid[2, 3]
    expected = data.copy()
    expected[2, 3, 1] = 0.0  # nodata values become 0, the mask keeps the information
    np.testing.assert_array_equal(cube.data, expected)
    with rasterio.open(tmp_path / "x.tif") as src:  # bands first on disk
        assert src.driver == "GTiff" and src.count == 5 and (src.height, src.width) == (9, 7)


def test_geotiff_nan_pixels_are_invalid(tmp_path):
    data = np.ones((4, 4, 2), np.float32)
    data[0, 0, 0] = np.nan
    write_geotiff(tmp_path / "n.tif", data, GeoInfo(nodata=float("nan")))
    cube = read_cube(tmp_path / "n.tif")
    assert not cube.valid[0, 0] and cube.valid.sum() == 15 and np.isfinite(cube.data).all()


def test_geotiff_integer_normalised(tmp_path):
    raw = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4) * 1000
    with rasterio.open(
        tmp_path / "u.tif", "w", driver="GTiff", width=4, height=3, count=2, dtype="uint16",
        crs=CRS.from_epsg(4326), transform=Affine(0.1, 0, 10, 0, -0.1, 50),
    ) as dst:  # fmt: skip
        dst.write(raw)
    cube = read_cube(tmp_path / "u.tif")
    assert cube.scale_factor == 65535.0 and cube.valid is None and cube.wavelengths is None
    np.testing.assert_allclose(cube.data, raw.transpose(1, 2, 0) / 65535.0, rtol=1e-6)


def test_geoinfo_scaled_keeps_footprint(tmp_path):
    geo = _geo(3)
    fine = geo.scaled(4)
    assert fine.crs == geo.crs and fine.nodata == geo.nodata
    assert (fine.transform.c, fine.transform.f) == (geo.transform.c, geo.transform.f)  # same origin
    assert (fine.transform.a, fine.transform.e) == (0.5, -0.5)
    assert geo.transform.a == 2.0  # original untouched
    write_geotiff(tmp_path / "lr.tif", np.zeros((5, 6, 3), np.float32), geo)
    write_geotiff(tmp_path / "sr.tif", np.zeros((20, 24, 3), np.float32), fine)
    with rasterio.open(tmp_path / "lr.tif") as lr, rasterio.open(tmp_path / "sr.tif") as sr:
        assert lr.bounds == sr.bounds and lr.crs == sr.crs
    assert GeoInfo().scaled(2).transform is None
    with pytest.raises(ValueError):
        geo.scaled(0)


@pytest.mark.parametrize("open_as", ["x.img", "x.hdr"])
def test_envi_roundtrip(tmp_path, open_as):
    data = np.random.default_rng(7).random((3, 5, 6)).astype(np.float32)  # bands first on disk
    with rasterio.open(
        tmp_path / "x.img", "w", driver="ENVI", width=6, height=5, count=3, dtype="float32",
        crs=CRS.from_epsg(32633), transform=Affine(30, 0, 500000, 0, -30, 4000000),
    ) as dst:  # fmt: skip
        dst.write(data)
        dst.update_tags(ns="ENVI", wavelength="{0.45, 0.55, 0.65}", wavelength_units="Micrometers")
    cube = read_cube(tmp_path / open_as)
    np.testing.assert_array_equal(cube.data, data.transpose(1, 2, 0))
    np.testing.assert_allclose(cube.wavelengths, [450, 550, 650])
    assert cube.geo.crs == CRS.from_epsg(32633) and cube.geo.transform.a == 30
    assert cube.name == "x"


def test_envi_header_without_data(tmp_path):
    (tmp_path / "lonely.hdr").write_text("ENVI\nsamples = 2\n")
    with pytest.raises(InputError, match="lonely.hdr.*without its data file"):
        read_cube(tmp_path / "lonely.hdr")


# --------------------------------------------------------------------------------------------------
# read_rgb


def test_read_rgb_8bit_png_jpeg_bmp(tmp_path):
    rgb = np.random.default_rng(8).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    for name in ("a.png", "a.bmp"):
        Image.fromarray(rgb).save(tmp_path / name)
        out = read_rgb(tmp_path / name)
        assert out.shape == (6, 7, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, rgb / 255.0, atol=1e-7)
    Image.fromarray(np.full((6, 7, 3), 200, np.uint8)).save(tmp_path / "a.jpg", quality=95)
    np.testing.assert_allclose(read_rgb(tmp_path / "a.jpg"), 200 / 255.0, atol=3 / 255)


def test_read_rgb_16bit_png_and_tiff(tmp_path):
    rgb = np.random.default_rng(9).integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    write_png(tmp_path / "a16.png", rgb)  # Pillow would only give 8 bits back: read through GDAL
    np.testing.assert_allclose(read_rgb(tmp_path / "a16.png"), rgb / 65535.0, rtol=1e-6)
    with rasterio.open(
        tmp_path / "a16.tif", "w", driver="GTiff", width=7, height=6, count=3, dtype="uint16"
    ) as d:
        d.write(rgb.transpose(2, 0, 1))
    np.testing.assert_allclose(read_rgb(tmp_path / "a16.tif"), rgb / 65535.0, rtol=1e-6)


def test_read_rgb_rgba_drops_alpha(tmp_path):
    rgba = np.random.default_rng(10).integers(0, 256, (4, 5, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: colours must survive anyway
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_allclose(read_rgb(tmp_path / "a.png"), rgba[..., :3] / 255.0, atol=1e-7)
    rgba16 = rgba.astype(np.uint16) * 257
    write_png(tmp_path / "a16.png", rgba16)
    np.testing.assert_allclose(read_rgb(tmp_path / "a16.png"), rgba[..., :3] / 255.0, atol=1e-6)


@pytest.mark.parametrize("bits", [8, 16])
def test_read_rgb_grayscale_repeated(tmp_path, bits):
    gray = np.random.default_rng(11).integers(0, 2**bits, (5, 4)).astype(np.uint8 if bits == 8 else np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(gray).save(tmp_path / "g.tif")
    for name in ("g.png", "g.tif"):
        out = read_rgb(tmp_path / name)
        assert out.shape == (5, 4, 3)
        for c in range(3):
            np.testing.assert_allclose(out[..., c], gray / (2**bits - 1.0), rtol=1e-6)


def test_read_rgb_palette(tmp_path):
    im = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.save(tmp_path / "p.png")
    out = read_rgb(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0, 0], [1, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 1])


# --------------------------------------------------------------------------------------------------
# Errors: every one an InputError naming the file


def _nan_npy(p: Path) -> None:
    a = np.zeros((3, 3, 2), np.float32)
    a[0, 0, 0] = a[1, 1, 1] = np.nan
    a[2, 2, 0] = np.inf
    np.save(p, a)


def _no_cube_mat(p: Path) -> None:
    scipy.io.savemat(p, {"v": np.arange(5.0)})


ERROR_CASES = {
    "missing": ("nothing.npy", None, "no such file"),
    "unsupported extension": ("cube.txt", lambda p: p.write_text("1 2 3"), "unsupported file type"),
    "empty file": ("cube.npy", lambda p: p.write_bytes(b""), "empty"),
    "corrupt mat": ("cube.mat", lambda p: p.write_bytes(os.urandom(300)), "cannot read"),
    "corrupt v7.3 header": (
        "cube.mat",
        lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100),
        "cannot read",
    ),
    "corrupt npy": ("cube.npy", lambda p: p.write_bytes(b"\x93NUMPY garbage"), "cannot read"),
    "corrupt npz": ("cube.npz", lambda p: p.write_bytes(b"PK\x03\x04 garbage"), "cannot read"),
    "corrupt tif": ("cube.tif", lambda p: p.write_bytes(b"II*\x00" + os.urandom(64)), "cannot read"),
    "nan": ("cube.npy", _nan_npy, "2 NaN and 1 Inf"),
    "no 3-D variable": ("cube.mat", _no_cube_mat, "no 3-D numeric array"),
    "2-D npy": ("cube.npy", lambda p: np.save(p, np.zeros((4, 4))), "expected a 3-D cube"),
    "zero-size": ("cube.npy", lambda p: np.save(p, np.zeros((0, 4, 3))), "empty"),
    "object npy": ("cube.npy", lambda p: np.save(p, np.array([{}], dtype=object)), "cannot read"),
    "npz without cube": ("cube.npz", lambda p: np.savez(p, a=np.zeros(3)), "no 3-D numeric array"),
    "nan in mat": ("cube.mat", lambda p: scipy.io.savemat(p, {"x": np.full((2, 2, 2), np.nan)}), "8 NaN"),
    "inf in tif": ("cube.tif", lambda p: write_geotiff(p, np.full((2, 2, 2), np.inf, np.float32)), "Inf"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_read_cube_errors(tmp_path, case):
    name, make, message = ERROR_CASES[case]
    path = tmp_path / name
    if make:
        make(path)
    with pytest.raises(InputError) as err:
        read_cube(path)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.png", None, "no such file"),
        ("photo.gif", b"GIF89a", "unsupported image type"),
        ("photo.png", b"\x89PNG\r\n\x1a\n garbage", "cannot read"),
        ("photo.jpg", b"\xff\xd8\xff garbage", "cannot read"),
        ("photo.tif", b"II*\x00 garbage", "cannot read"),
        ("photo.png", b"", "empty"),
    ],
)
def test_read_rgb_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_rgb(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_read_rgb_float_out_of_range(tmp_path):
    write_geotiff(tmp_path / "f.tif", np.full((2, 2, 3), 255.0, np.float32))
    with pytest.raises(InputError, match=r"f\.tif.*\[0, 1\]"):
        read_rgb(tmp_path / "f.tif")


# --------------------------------------------------------------------------------------------------
# find_cubes


def test_find_cubes(tmp_path):
    _band_pngs(tmp_path / "scenes" / "flat_ms", "flat", 3)
    _band_pngs(tmp_path / "scenes" / "nested_ms" / "nested_ms", "nested", 3)
    np.save(tmp_path / "b.npy", np.zeros((2, 2, 2)))
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "c.npz", x=np.zeros((2, 2, 2)))
    scipy.io.savemat(tmp_path / "A.mat", {"x": np.zeros((2, 2, 2))})
    write_geotiff(tmp_path / "d.tif", np.zeros((2, 2, 2), np.float32))
    with rasterio.open(
        tmp_path / "e.img", "w", driver="ENVI", width=2, height=2, count=2, dtype="float32"
    ) as d:
        d.write(np.zeros((2, 2, 2), np.float32))
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "photo.png")
    np.save(tmp_path / ".hidden.npy", np.zeros((2, 2, 2)))
    found = [p.relative_to(tmp_path).as_posix() for p in find_cubes(tmp_path)]
    assert found == [
        "A.mat", "b.npy", "sub/c.npz", "d.tif", "e.hdr", "scenes/flat_ms", "scenes/nested_ms/nested_ms",
    ]  # fmt: skip
    for p in find_cubes(tmp_path):
        assert read_cube(p).data.ndim == 3
    with pytest.raises(InputError, match="not a folder"):
        find_cubes(tmp_path / "b.npy")


def test_find_cubes_shared_cave(shared_data):
    found = find_cubes(shared_data / "cave")
    assert [p.name for p in found] == [f"{s}_ms" for s in CAVE_SCENES]


# --------------------------------------------------------------------------------------------------
# Writers


def test_write_npy_atomic(tmp_path):
    a = np.random.default_rng(12).random((3, 4, 5)).astype(np.float32)
    write_npy(tmp_path / "a.npy", a)
    assert _files_in(tmp_path) == ["a.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)
    write_npy(tmp_path / "a.npy", a * 2)  # overwrites in place
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a * 2)


def test_writers_leave_nothing_behind_on_failure(tmp_path, monkeypatch):
    write_npy(tmp_path / "a.npy", np.zeros(3))

    def broken_save(f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(sschsr.data.io.writers.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_npy(tmp_path / "a.npy", np.ones(3))
    monkeypatch.undo()
    assert _files_in(tmp_path) == ["a.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.zeros(3))  # old file untouched

    def broken_write(self, *args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", broken_write)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_geotiff(tmp_path / "g.tif", np.zeros((2, 2, 2), np.float32), _geo(2))
    monkeypatch.undo()
    monkeypatch.setattr(Image.Image, "save", broken_write)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_png(tmp_path / "p.png", np.zeros((2, 2, 3)))
    assert _files_in(tmp_path) == ["a.npy"]


def test_writers_missing_folder(tmp_path):
    for write, arg in [(write_npy, np.zeros(2)), (write_png, np.zeros((2, 2, 3))),
                       (write_geotiff, np.zeros((2, 2, 1)))]:  # fmt: skip
        with pytest.raises(InputError, match="does not exist"):
            write(tmp_path / "no" / "x.out", arg)


def test_write_png_8bit_and_16bit(tmp_path):
    x = np.array([[[0.0, 0.5, 1.0], [1.2, -0.1, 0.25]]], np.float32)  # clipped, rounded
    write_png(tmp_path / "f.png", x)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "f.png")), [[[0, 128, 255], [255, 0, 64]]])
    u8 = np.random.default_rng(13).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    write_png(tmp_path / "u8.png", u8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "u8.png")), u8)
    u16 = np.random.default_rng(14).integers(0, 65536, (3, 4, 3), dtype=np.uint16)
    write_png(tmp_path / "u16.png", u16)
    with rasterio.open(tmp_path / "u16.png") as src:  # an independent decoder reads our 16-bit encoder
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0), u16)
    gray16 = u16[..., 0]
    write_png(tmp_path / "g16.png", gray16)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g16.png")), gray16)
    assert _files_in(tmp_path) == ["f.png", "g16.png", "u16.png", "u8.png"]
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", np.zeros((2, 2, 5)))
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", np.full((2, 2, 3), np.nan))


def test_png16_crc_and_signature():
    data = sschsr.data.io.writers._png16_bytes(np.zeros((1, 1, 3), np.uint16))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length = int.from_bytes(data[8:12], "big")
    assert zlib.crc32(data[12 : 16 + length]) == int.from_bytes(data[16 + length : 20 + length], "big")


@pytest.mark.parametrize(
    "descriptions,expected",
    [
        (["450.5", "550", "650.25"], [450.5, 550, 650.25]),
        (["Band 1 (0.45 Micrometers)", "Band 2 (0.55 Micrometers)"], [450, 550]),
        (["B2 492 nm", "B3 560 nm"], [492, 560]),
        (["1", "2", "3"], None),  # band numbers, not wavelengths
        (["red", "green"], None),
    ],
)
def test_wavelengths_from_band_descriptions(descriptions, expected):
    wl = sschsr.data.io.raster._wavelengths_from_descriptions(descriptions)
    if expected is None:
        assert wl is None
    else:
        np.testing.assert_allclose(wl, expected)


def test_write_geotiff_descriptions_override_and_foreign_wavelengths_dropped(tmp_path):
    write_geotiff(tmp_path / "o.tif", np.zeros((2, 2, 2), np.float32), _geo(5), band_descriptions=["a", "b"])
    cube = read_cube(tmp_path / "o.tif")
    assert cube.geo.band_descriptions == ("a", "b") and cube.wavelengths is None
    with pytest.raises(ValueError):
        write_geotiff(tmp_path / "bad.tif", np.zeros((2, 2, 2), np.float32), None, band_descriptions=["a"])
    assert _files_in(tmp_path) == ["o.tif"]
