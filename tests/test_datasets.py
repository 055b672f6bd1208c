"""Scene sources, splits, PairDataset items and the datamodule (CPU, tiny sizes)."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sschsr.data.augment import flip_rot, random_crop
from sschsr.data.datamodules import HSIDataModule
from sschsr.data.datasets import CubeFolder, HSIRefSRFolder, MixedScenes, ProceduralScenes, split_names
from sschsr.data.geotiff_tiles import GeoTIFFTiles
from sschsr.data.pair_dataset import PairDataset
from sschsr.data.seeding import stable_seed
from sschsr.data.spectral import fast_match_histograms, match_histograms, render, render_rgb
from sschsr.errors import InputError
from sschsr.ops.warp import flow_warp

CONF = Path(__file__).resolve().parents[1] / "conf"
KEYS = {"lr", "lr_up", "hr", "ref", "rgb_hsi", "rgb_hr", "flow", "valid", "mask", "srf", "has_flow", "name"}
NAMES = [f"s{i:02d}" for i in range(10)]


@pytest.fixture(scope="module")
def tiny_source() -> ProceduralScenes:
    # module scope: scenes are generated once and shared by the tests (the source caches them)
    return ProceduralScenes(num=4, size=64, n_bands=8, seed=3)


def check_item(item: dict, c: int, size: tuple[int, int], scale: int, has_flow: bool = True) -> None:
    h, w = size
    assert set(item) == KEYS
    shapes = {
        "lr": (c, h // scale, w // scale),
        "lr_up": (c, h, w),
        "hr": (c, h, w),
        "ref": (3, h, w),
        "rgb_hsi": (3, h, w),
        "rgb_hr": (3, h, w),
        "flow": (2, h, w),
        "valid": (h, w),
        "mask": (h, w),
        "srf": (3, c),
    }
    for k, shape in shapes.items():
        assert tuple(item[k].shape) == shape, k
        assert item[k].dtype == (torch.bool if k in ("valid", "mask") else torch.float32), k
        if item[k].dtype == torch.float32:
            assert torch.isfinite(item[k]).all(), k
    for k in ("ref", "rgb_hsi", "rgb_hr"):
        assert item[k].min() >= 0 and item[k].max() <= 1, k
    assert item["hr"].min() >= 0 and item["hr"].max() <= 1.0 + 1e-6
    torch.testing.assert_close(item["srf"].sum(1), torch.ones(3))
    assert item["has_flow"] is has_flow and isinstance(item["name"], str)
    if has_flow:
        assert item["valid"].float().mean() > 0.2
    else:
        assert not item["valid"].any() and not item["flow"].any()


# ------------------------------------------------------------------------------------------- splits


class TestSplitNames:
    def test_disjoint_complete_deterministic(self):
        a = split_names(NAMES, val=2, test=3, seed=5)
        assert a == split_names(list(reversed(NAMES)), val=2, test=3, seed=5)
        assert [len(a[s]) for s in ("train", "val", "test")] == [5, 2, 3]
        assert sorted(a["train"] + a["val"] + a["test"]) == NAMES
        assert not (
            set(a["train"]) & set(a["val"])
            or set(a["val"]) & set(a["test"])
            or set(a["train"]) & set(a["test"])
        )
        assert split_names(NAMES, val=2, test=3, seed=6) != a

    def test_test_set_does_not_depend_on_val(self):
        assert split_names(NAMES, 1, 3, 0)["test"] == split_names(NAMES, 4, 3, 0)["test"]

    def test_fractions(self):
        s = split_names(NAMES, val=0.2, test=0.1, seed=0)
        assert (len(s["val"]), len(s["test"])) == (2, 1)

    def test_lists(self, tmp_path):
        (tmp_path / "test.txt").write_text("# held out\ns01\ns02.mat\n\n")
        s = split_names(NAMES, val=2, test=5, seed=0, lists={"test": tmp_path / "test.txt"})
        assert s["test"] == ["s01", "s02"]
        assert len(s["val"]) == 2 and not set(s["val"]) & {"s01", "s02"}
        s = split_names(NAMES, val=1, seed=0, lists={"train": ["s00", "s03", "s04"], "test": ["s09"]})
        assert len(s["val"]) == 1 and set(s["val"]) < {"s00", "s03", "s04"}
        assert set(s["train"]) | set(s["val"]) == {"s00", "s03", "s04"} and s["test"] == ["s09"]

    @pytest.mark.parametrize(
        "kwargs,match",
        [
            (dict(val=6, test=5), "validation"),
            (dict(test=11), "test"),
            (dict(lists={"test": ["nope"]}), "unknown"),
            (dict(lists={"val": ["s01"], "test": ["s01"]}), "share"),
            (dict(lists={"test": []}), "empty"),
            (dict(val=-1), "counts"),
        ],
    )
    def test_errors(self, kwargs, match):
        with pytest.raises(InputError, match=match):
            split_names(NAMES, **{"seed": 0, **kwargs})


def test_stable_seed():
    assert stable_seed(0, "balloons", 1) == stable_seed(0, "balloons", 1) != stable_seed(0, "balloons", 2)
    assert stable_seed(0, "a") == 6539243125055167529  # the same on every machine and Python run


def test_fast_histogram_match_is_the_reference(generator):
    src, ref = torch.rand(3, 16, 20, generator=generator), torch.rand(3, 16, 20, generator=generator) ** 2
    torch.testing.assert_close(fast_match_histograms(src, ref), match_histograms(src, ref))


# ------------------------------------------------------------------------------------------ sources


def test_procedural_deterministic(tiny_source):
    other = ProceduralScenes(num=4, size=64, n_bands=8, seed=3)
    assert torch.equal(tiny_source.load("procedural_0002").hsi, other.load("procedural_0002").hsi)
    assert not torch.equal(tiny_source.load("procedural_0001").hsi, tiny_source.load("procedural_0002").hsi)
    with pytest.raises(InputError, match="no scene"):
        tiny_source.load("procedural_0009")


@pytest.fixture(scope="module")
def refsr_root(tmp_path_factory) -> Path:
    """A tiny HSI-RefSR layout: 4 scenes, references twice the HSI size, train/test lists."""
    from PIL import Image
    from scipy.io import savemat

    root = tmp_path_factory.mktemp("hsirefsr")
    (root / "img1_hsi" / "HR").mkdir(parents=True)
    (root / "img2_cmatch" / "HR").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        savemat(root / "img1_hsi" / "HR" / f"{i}.mat", {"gt": rng.random((40, 48, 6)) * 3.0})
        Image.fromarray((rng.random((80, 96, 3)) * 255).astype(np.uint8)).save(
            root / "img2_cmatch" / "HR" / f"{i}.png"
        )
    (root / "train.txt").write_text("0\n1\n2\n")
    (root / "test.txt").write_text("3\n")
    return root


def test_hsirefsr_layout(refsr_root):
    src = HSIRefSRFolder(refsr_root, n_bands=6)
    assert src.names() == ["0", "1", "2", "3"] and src.has_real_ref
    assert src.split_lists() == {"train": ["0", "1", "2"], "test": ["3"]}
    scene = src.load("1")
    assert scene.hsi.shape == (6, 40, 48) and scene.ref.shape == (3, 40, 48)
    assert scene.hsi.min() == 0 and scene.hsi.max() == 1  # min-max normalised as the dataset's code does
    splits = split_names(src.names(), val=1, seed=0, lists=src.split_lists())
    assert splits["test"] == ["3"] and len(splits["val"]) == 1 and len(splits["train"]) == 2
    ds = PairDataset(src, splits["train"], scale=4, crop_size=16, train=True, pairs_per_scene=4)
    assert len(ds) == 2  # real references: one view per scene
    check_item(ds[0], 6, (16, 16), 4, has_flow=False)
    item = PairDataset(src, ["3"], scale=8, crop_size=None, train=False)[0]
    check_item(item, 6, (40, 48), 8, has_flow=False)
    assert item["name"] == "3"
    with pytest.raises(InputError, match="n_bands=6"):
        HSIRefSRFolder(refsr_root, n_bands=31).load("0")
    with pytest.raises(InputError, match="missing missing/HR"):
        HSIRefSRFolder(refsr_root, ref_dir="missing/HR")


def write_raster(path: Path, data: np.ndarray, nodata=None, transform=None, dtype="float32") -> None:
    import rasterio
    from rasterio.transform import from_origin

    c, h, w = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=h,
        width=w,
        count=c,
        dtype=dtype,
        nodata=nodata,
        crs="EPSG:32615",
        transform=transform or from_origin(500000.0, 3300000.0, 2.0, 2.0),
    ) as dst:
        dst.write(data.astype(dtype))


def test_geotiff_tiles_nodata(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.random((5, 96, 96)).astype(np.float32) * 0.8
    data[:, :40, :40] = -9999.0  # nodata covering most of the top-left tile, a little of its neighbours
    write_raster(tmp_path / "scene.tif", data, nodata=-9999.0)
    src = GeoTIFFTiles(tmp_path / "scene.tif", tile=32, min_valid=0.9, n_bands=5)
    names = src.names()
    # tiles at rows/cols 0, 32, 64: (0,0) all nodata, (0,32) and (32,0) 25 % nodata -> dropped;
    # (32,32) 1/16 nodata -> kept
    assert "scene_r0_c0" not in names and "scene_r0_c32" not in names and "scene_r32_c0" not in names
    assert len(names) == 6 and "scene_r32_c32" in names
    tile = src.load("scene_r32_c32")
    assert tile.hsi.shape == (5, 32, 32) and tile.mask is not None
    assert (~tile.mask).sum() == 64 and tile.hsi[:, ~tile.mask].abs().max() == 0
    ds = PairDataset(src, ["scene_r32_c32"], scale=4, crop_size=None, train=False)
    item = ds[0]
    check_item(item, 5, (32, 32), 4)
    assert not item["valid"][~item["mask"]].any()  # nodata pixels are never valid
    # overlapping tiles: the last row/column is flush with the edge
    assert "scene_r64_c64" in GeoTIFFTiles(tmp_path / "scene.tif", tile=32, stride=24, min_valid=0.5).names()
    scaled = GeoTIFFTiles(tmp_path / "scene.tif", tile=32, normalize="max").full_scene()
    assert scaled.hsi.max() == 1 and scaled.hsi.min() == 0
    with pytest.raises(InputError, match="no 32 px tile"):
        GeoTIFFTiles(tmp_path / "scene.tif", tile=32, min_valid=1.01).names()


def test_geotiff_real_reference(tmp_path):
    from rasterio.transform import from_origin

    rng = np.random.default_rng(2)
    write_raster(tmp_path / "hsi.tif", rng.random((4, 32, 32)) * 0.5)
    # an RGB photo of the same area at twice the resolution, 8 bit, a constant colour per HSI pixel
    small = rng.integers(0, 256, (3, 32, 32))
    rgb = np.repeat(np.repeat(small, 2, axis=1), 2, axis=2)
    write_raster(
        tmp_path / "rgb.tif", rgb, transform=from_origin(500000.0, 3300000.0, 1.0, 1.0), dtype="uint8"
    )
    src = GeoTIFFTiles(tmp_path / "hsi.tif", tile=16, ref=tmp_path / "rgb.tif")
    assert src.has_real_ref
    scene = src.load("hsi_r16_c0")
    # resampled by georeferencing: each HSI pixel averages the 2 x 2 photo pixels it covers
    expected = torch.from_numpy(small[:, 16:32, 0:16] / 255.0).float()
    torch.testing.assert_close(scene.ref, expected, atol=1e-5, rtol=0)
    check_item(
        PairDataset(src, src.names(), scale=4, crop_size=16, train=True)[1], 4, (16, 16), 4, has_flow=False
    )


@pytest.fixture(scope="module")
def cave_one(shared_data) -> CubeFolder:
    src = CubeFolder(shared_data / "cave", names=["balloons_ms"], n_bands=31)
    src.load("balloons")  # read once for the tests below
    return src


@pytest.mark.parametrize("scale", [4, 8])
def test_cave_items(cave_one, scale):
    assert cave_one.names() == ["balloons"]
    train = PairDataset(cave_one, ["balloons"], scale=scale, crop_size=64, train=True, pairs_per_scene=1)
    check_item(train[0], 31, (64, 64), scale)
    val = PairDataset(cave_one, ["balloons"], scale=scale, crop_size=96, train=False, pairs_per_scene=1)
    item = val[0]
    check_item(item, 31, (96, 96), scale)
    assert item["name"] == "balloons"
    assert torch.equal(item["hr"], cave_one.load("balloons").hsi[:, 208:304, 208:304])  # the central crop


def test_cave_band_mismatch(shared_data):
    with pytest.raises(InputError, match="pass n_bands=31"):
        CubeFolder(shared_data / "cave", names=["balloons"], n_bands=48).load("balloons")


# ---------------------------------------------------------------------------------------- PairDataset


@pytest.mark.parametrize("scale", [4, 8])
def test_procedural_items(tiny_source, scale):
    train = PairDataset(
        tiny_source, tiny_source.names()[:3], scale=scale, crop_size=32, train=True, pairs_per_scene=2
    )
    assert len(train) == 6
    for i in range(2):
        check_item(train[i], 8, (32, 32), scale)
    val = PairDataset(tiny_source, tiny_source.names()[3:], scale=scale, crop_size=None, train=False)
    check_item(val[0], 8, (64, 64), scale)
    odd = PairDataset(tiny_source, tiny_source.names()[3:], scale=scale, crop_size=(40, 24), train=False)
    check_item(odd[0], 8, (40, 24), scale)


def test_eval_items_identical_across_instances(tiny_source):
    kwargs = dict(
        scale=4, crop_size=48, train=False, pairs_per_scene=2, degradation=dict(noise_std=0.01), seed=1
    )
    a = PairDataset(tiny_source, ["procedural_0001"], **kwargs)
    b = PairDataset(ProceduralScenes(num=4, size=64, n_bands=8, seed=3), ["procedural_0001"], **kwargs)
    assert len(a) == 2
    for i in (1, 0):
        x, y = a[i], b[i]
        for k in KEYS - {"name", "has_flow"}:
            assert torch.equal(x[k], y[k]), k
    assert not torch.equal(a[0]["ref"], a[1]["ref"])  # two different views
    # the training seed does not change the evaluation pairs
    c = PairDataset(tiny_source, ["procedural_0001"], **{**kwargs, "seed": 2, "view_seed": 1})
    assert torch.equal(c[0]["ref"], a[0]["ref"]) and torch.equal(c[0]["lr"], a[0]["lr"])


def test_train_items_differ_and_repeat_per_run(tiny_source):
    from sschsr.data.sampling import Draw

    def run():
        ds = PairDataset(
            tiny_source, tiny_source.names(), scale=4, crop_size=32, train=True, pairs_per_scene=1, seed=7
        )
        return [ds[i] for i in (0, 1, Draw(0, 1, 0))]

    first, second = run(), run()
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x["hr"], y["hr"]) and torch.equal(x["flow"], y["flow"])
    assert not torch.equal(first[0]["hr"], first[1]["hr"])
    # the same pair drawn in a later epoch gets another crop
    assert first[0]["name"] == first[2]["name"] and not torch.equal(first[0]["hr"], first[2]["hr"])


def test_flow_aligns_reference(tiny_source):
    """Warping ``ref`` by ``flow`` brings it onto the HSI: much closer to the HSI's rendering than ``ref``."""
    ds = PairDataset(
        tiny_source, tiny_source.names(), scale=4, crop_size=48, train=True, pairs_per_scene=2, seed=0
    )
    gains = []
    for i in range(len(ds)):
        item = ds[i]
        v = item["valid"]
        warped = flow_warp(item["ref"][None], item["flow"][None])[0]
        target = fast_match_histograms(render(item["hr"], item["srf"]), item["ref"])
        torch.testing.assert_close(item["rgb_hr"], target.clamp(0, 1))  # rgb_hr: the aligned target
        err_warp = (warped - target).abs()[:, v].mean()
        err_none = (item["ref"] - target).abs()[:, v].mean()
        err_rgb = (
            (warped - item["rgb_hsi"]).abs()[:, v].mean(),
            (item["ref"] - item["rgb_hsi"]).abs()[:, v].mean(),
        )
        assert err_rgb[0] < err_rgb[1]
        gains.append(float(err_none / err_warp))
    assert min(gains) > 1.2 and np.median(gains) > 1.5, gains


# -------------------------------------------------------------------------------------------- rgb_hr


def plain_pairs(source, **kwargs) -> PairDataset:
    """Pairs without any change of camera or viewpoint: ``ref`` is the HR HSI's own CIE rendering."""
    synth = {"identity": True, "photometric": {"enabled": False}}
    return PairDataset(source, source.names(), scale=4, synth=synth, camera="cie1931", **kwargs)


@pytest.mark.parametrize("match", ["histogram", "moments"])
def test_rgb_hr_is_the_rendered_hr_without_photometric_change(tiny_source, match):
    for train, crop_size in ((True, 32), (False, None)):
        ds = plain_pairs(tiny_source, crop_size=crop_size, train=train, pairs_per_scene=1, match=match)
        for i in range(2):
            item = ds[i]
            rendered = render(item["hr"], item["srf"]).clamp(0, 1)
            assert not item["flow"].any() and item["valid"].all()
            torch.testing.assert_close(item["ref"], rendered, atol=1e-6, rtol=0)
            # matched to itself: unchanged (histogram exactly, moments up to its eps)
            torch.testing.assert_close(
                item["rgb_hr"], rendered, atol=1e-4 if match == "moments" else 1e-6, rtol=0
            )
            # rgb_hsi is the same rendering of the blurrier lr_up
            torch.testing.assert_close(
                item["rgb_hsi"], render_rgb(item["lr_up"], item["srf"], item["ref"], match)
            )
            assert (item["rgb_hsi"] - item["rgb_hr"]).abs().mean() > 1e-3


def test_rgb_hr_same_response_and_match_as_rgb_hsi(tiny_source):
    ds = PairDataset(
        tiny_source, tiny_source.names(), scale=4, crop_size=32, train=True, pairs_per_scene=2, seed=3
    )
    item = ds[1]
    # the photo's colours: the same sorted values per channel as ref, for both renderings
    for k in ("rgb_hsi", "rgb_hr"):
        torch.testing.assert_close(item[k].flatten(1).sort().values, item["ref"].flatten(1).sort().values)
    # the same function of hr as rgb_hsi is of lr_up
    torch.testing.assert_close(item["rgb_hr"], render_rgb(item["hr"], item["srf"], item["ref"]))
    torch.testing.assert_close(item["rgb_hsi"], render_rgb(item["lr_up"], item["srf"], item["ref"]))


@pytest.mark.parametrize("hflip,k", [(False, 1), (True, 0), (True, 3), (False, 2)])
def test_rgb_hr_follows_augmentation(tiny_source, hflip, k):
    """Cropping and turning the pair then rendering = rendering then the same transform: rgb_hr moves with
    hr and ref (the histogram match only permutes values) and stays aligned with flow."""
    ds = PairDataset(tiny_source, tiny_source.names(), scale=4, crop_size=48, train=True, pairs_per_scene=1)
    name, view = ds.key(2)
    sample = random_crop(ds.pair(name, view), (48, 32), torch.Generator().manual_seed(0), multiple_of=4)
    g = torch.Generator()
    plain = ds.finish(sample, name, g)
    turned = ds.finish(flip_rot(sample, hflip=hflip, k=k), name, g)
    # (not lr, lr_up, rgb_hsi: decimation keeps every s-th pixel from the first, which a turn moves)
    for key in ("hr", "ref", "rgb_hr", "flow", "valid"):
        torch.testing.assert_close(
            turned[key], flip_rot({key: plain[key]}, hflip=hflip, k=k)[key], atol=1e-6, rtol=0, msg=key
        )
    assert tuple(turned["rgb_hr"].shape) == ((3, 32, 48) if k % 2 else (3, 48, 32))


def test_render_target_fallback_matches_the_data(tiny_source):
    """Stage 2's fallback for batches without rgb_hr renders what the data layer provides."""
    from torch.utils.data import default_collate

    from sschsr.lit.warp import render_target

    ds = PairDataset(tiny_source, tiny_source.names(), scale=4, crop_size=32, train=True, pairs_per_scene=2)
    batch = default_collate([ds[i] for i in range(3)])
    assert render_target(batch) is batch["rgb_hr"]
    made = render_target({k: v for k, v in batch.items() if k != "rgb_hr"})
    torch.testing.assert_close(made, batch["rgb_hr"], atol=1e-6, rtol=0)
    # the torch path (GPU tensors, gradients) gives the same target
    torch.testing.assert_close(
        render_rgb(batch["hr"].requires_grad_(), batch["srf"], batch["ref"]).detach(), made
    )


def test_worker_shards(tiny_source):
    """In training, the batches a worker makes draw from its own block of (scene, view) pairs; caches stay
    bounded."""
    ds = PairDataset(
        tiny_source,
        tiny_source.names(),
        scale=4,
        crop_size=32,
        train=True,
        pairs_per_scene=2,
        samples_per_epoch=40,
        cache_pairs=1,
    )
    stream = ds.stream(batch_size=4, num_workers=2)
    draws = list(stream)
    served = {
        w: {ds.key(d) for j in range(w, stream.batches, 2) for d in draws[4 * j : 4 * j + 4]} for w in (0, 1)
    }
    names = tiny_source.names()
    assert served[0] == {(n, v) for n in names[:2] for v in (0, 1)}
    assert served[1] == {(n, v) for n in names[2:] for v in (0, 1)}
    for d in draws[:2]:
        check_item(ds[d], 8, (32, 32), 4)
    assert len(ds._pairs) == 1  # cache_pairs=1 keeps the most recent view only


def test_bad_settings(tiny_source):
    with pytest.raises(InputError, match="multiple"):
        PairDataset(tiny_source, tiny_source.names(), scale=8, crop_size=36, train=True)
    with pytest.raises(InputError, match="crop_size"):
        PairDataset(tiny_source, tiny_source.names(), scale=4, crop_size=None, train=True)
    with pytest.raises(InputError, match="smaller"):
        PairDataset(tiny_source, tiny_source.names(), scale=4, crop_size=128, train=True)[0]


# ------------------------------------------------------------------------------------------ MixedScenes


@pytest.fixture(scope="module")
def mixed() -> MixedScenes:
    return MixedScenes(
        {
            "nat": ProceduralScenes(num=5, size=48, n_bands=8, seed=0),
            "gen": ProceduralScenes(num=3, size=48, n_bands=8, seed=50),
        },
        train_only=["gen"],
        repeat={"nat": 2},
    )


def test_mixed_source(mixed):
    assert mixed.names() == [f"gen/procedural_000{i}" for i in range(3)] + [
        f"nat/procedural_000{i}" for i in range(5)
    ]
    assert mixed.train_only_names() == [f"gen/procedural_000{i}" for i in range(3)]
    assert torch.equal(
        mixed.load("gen/procedural_0001").hsi,
        ProceduralScenes(num=3, size=48, n_bands=8, seed=50).load("procedural_0001").hsi,
    )
    assert mixed.seed_name("nat/procedural_0002") == "procedural_0002" and not mixed.has_real_ref
    with pytest.raises(InputError, match="no scene"):
        mixed.load("procedural_0001")
    with pytest.raises(InputError, match="no scene"):
        mixed.load("nat/procedural_0009")
    # repeats stay adjacent (one worker loads the scene), sources interleave (every worker block mixes them)
    order = mixed.train_list(
        ["gen/procedural_0000", "gen/procedural_0001", "nat/procedural_0000", "nat/procedural_0003"]
    )
    assert order == [
        "gen/procedural_0000",
        "nat/procedural_0000",
        "nat/procedural_0000",
        "gen/procedural_0001",
        "nat/procedural_0003",
        "nat/procedural_0003",
    ]
    for kwargs, match in (
        (dict(train_only=["x"]), "unknown sources"),
        (dict(train_only=["a"]), "nothing is left"),
        (dict(repeat={"a": 0}), ">= 1"),
    ):
        with pytest.raises(InputError, match=match):
            MixedScenes({"a": ProceduralScenes(num=1, size=16)}, **kwargs)
    with pytest.raises(InputError, match="without"):
        MixedScenes({"a/b": ProceduralScenes(num=1, size=16)})


def test_mixed_splits_and_batches(mixed):
    lists = {"val": ["nat/procedural_0001"], "test": ["nat/procedural_0003", "nat/procedural_0004"]}
    dm = HSIDataModule(
        mixed,
        scale=4,
        n_bands=8,
        crop_size=32,
        batch_size=4,
        num_workers=0,
        lists=lists,
        pairs_per_scene=2,
        samples_per_epoch=8,
    )
    s = dm.split()
    assert s["val"] == lists["val"] and s["test"] == lists["test"]
    assert s["train"] == [
        "gen/procedural_0000",
        "gen/procedural_0001",
        "gen/procedural_0002",
        "nat/procedural_0000",
        "nat/procedural_0002",
    ]
    assert not (
        set(s["train"]) & set(s["val"]) or set(s["train"]) & set(s["test"]) or set(s["val"]) & set(s["test"])
    )
    dm.setup("fit")
    assert len(dm.dataset("train").names) == 3 + 2 * 2  # natural training scenes twice
    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    for b in batches:
        assert set(b) == KEYS
        assert b["hr"].shape == (4, 8, 32, 32) and b["lr"].shape == (4, 8, 8, 8)
        assert b["rgb_hr"].shape == b["rgb_hsi"].shape == b["ref"].shape == (4, 3, 32, 32)
        assert {n.split("#")[0] for n in b["name"]} <= set(s["train"])
    v = next(iter(dm.val_dataloader()))
    assert v["name"] == ["nat/procedural_0001"] and v["hr"].shape == (1, 8, 48, 48)
    # drawn (not listed) validation and test scenes come from the natural source only
    for seed in range(5):
        drawn = HSIDataModule(
            mixed, scale=4, crop_size=32, num_workers=0, val=1, test=2, split_seed=seed
        ).split()
        assert all(n.startswith("nat/") for n in drawn["val"] + drawn["test"])
        assert set(mixed.train_only_names()) <= set(drawn["train"])
    with pytest.raises(InputError, match="training-only"):
        HSIDataModule(
            mixed, scale=4, crop_size=32, num_workers=0, lists={"test": ["gen/procedural_0000"]}
        ).split()


def test_mixed_eval_pairs_equal_the_sources_own(mixed):
    """A scene is evaluated on the same pair inside the mix as in its own dataset."""
    own = ProceduralScenes(num=5, size=48, n_bands=8, seed=0)
    kwargs = dict(scale=4, crop_size=None, train=False, degradation=dict(noise_std=0.01), pairs_per_scene=1)
    a = PairDataset(mixed, ["nat/procedural_0003"], **kwargs)[0]
    b = PairDataset(own, ["procedural_0003"], **kwargs)[0]
    assert a["name"] == "nat/procedural_0003" and b["name"] == "procedural_0003"
    for k in KEYS - {"name", "has_flow"}:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------------------- datamodule


@pytest.mark.parametrize("workers", [0, 2])
def test_datamodule_batches(workers):
    src = ProceduralScenes(num=6, size=48, n_bands=8, seed=0)
    dm = HSIDataModule(
        src,
        scale=4,
        n_bands=8,
        crop_size=32,
        eval_crop_size=48,
        batch_size=3,
        num_workers=workers,
        val=1,
        test=1,
        pairs_per_scene=2,
        samples_per_epoch=6,
        seed=0,
    )
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.split().items()} == {"train": 4, "val": 1, "test": 1}
    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    b = batches[0]
    assert set(b) == KEYS
    assert (
        b["lr"].shape == (3, 8, 8, 8) and b["hr"].shape == (3, 8, 32, 32) and b["ref"].shape == (3, 3, 32, 32)
    )
    assert (
        b["flow"].shape == (3, 2, 32, 32)
        and b["valid"].shape == (3, 32, 32)
        and b["valid"].dtype == torch.bool
    )
    assert b["has_flow"].dtype == torch.bool and b["has_flow"].all() and len(b["name"]) == 3
    names = {n.split("#")[0] for batch in batches for n in batch["name"]}
    assert names <= set(dm.split()["train"])
    v = next(iter(dm.val_dataloader()))
    assert v["hr"].shape == (1, 8, 48, 48) and v["name"][0].split("#")[0] in dm.split()["val"]
    dm.setup("test")
    t = next(iter(dm.test_dataloader()))
    assert t["name"][0].split("#")[0] in dm.split()["test"]


def test_datamodule_band_check(tiny_source):
    dm = HSIDataModule(tiny_source, scale=4, n_bands=31, crop_size=32, num_workers=0, val=1)
    with pytest.raises(InputError, match="pass n_bands=8"):
        dm.setup("fit")


# ------------------------------------------------------------------------------------------- configs


def compose_data(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def data_configs() -> list[str]:
    return sorted(p.stem for p in (CONF / "data").glob("*.yaml"))


def test_every_data_config_is_tested():
    assert {"procedural", "cave", "cave_procedural", "hsirefsr", "geotiff"} <= set(data_configs())


@pytest.mark.parametrize("name", data_configs())
def test_configs_compose(name, shared_data, refsr_root, tmp_path):
    write_raster(tmp_path / "scene.tif", np.random.default_rng(0).random((31, 64, 64)))
    extra = {
        "hsirefsr": [f"data.source.root={refsr_root}", "n_bands=6", "data.val=1"],
        "geotiff": [f"data.source.path={tmp_path / 'scene.tif'}", "data.source.tile=32"],
    }.get(name, [])
    cfg = compose_data(
        [f"data={name}", "scale=8", f"paths.shared_data={shared_data}", "data.num_workers=0", *extra]
    )
    assert cfg.data.scale == 8 and cfg.data.n_bands == cfg.n_bands
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, L.LightningDataModule) and isinstance(dm, HSIDataModule)
    splits = dm.split()
    assert splits["val"] and splits["test"] and not set(splits["val"]) & set(splits["test"])
    if name == "cave":
        assert splits["test"] == ["balloons", "cloth", "feathers"] and len(splits["val"]) == 2
    if name == "procedural":
        assert [len(splits[s]) for s in ("train", "val", "test")] == [64, 4, 4]
    if name == "cave_procedural":  # the CAVE lists; procedural scenes only train
        cave = compose_data(["data=cave", f"paths.shared_data={shared_data}"]).data.lists
        assert splits["test"] == [f"cave/{n}" for n in cave.test] and splits["val"] == [
            f"cave/{n}" for n in cave.val
        ]
        n_proc = cfg.data.source.sources.procedural.num
        assert len(splits["train"]) == 12 - 5 + n_proc
        assert sum(n.startswith("procedural/") for n in splits["train"]) == n_proc
        assert isinstance(dm.source, MixedScenes) and dm.source.train_only == ["procedural"]


def test_required_roots_are_missing_values():
    for name, key in (("hsirefsr", "root"), ("geotiff", "path")):
        cfg = OmegaConf.load(CONF / "data" / f"{name}.yaml")
        assert OmegaConf.is_missing(cfg.source, key)


def test_cave_config_band_mismatch(shared_data):
    cfg = compose_data(["data=cave", "n_bands=48", f"paths.shared_data={shared_data}", "data.num_workers=0"])
    dm = hydra.utils.instantiate(cfg.data)
    with pytest.raises(InputError, match="pass n_bands=31"):
        dm.setup("fit")
