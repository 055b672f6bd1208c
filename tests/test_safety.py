"""Nothing lost, nothing run that should not be (issue 36): outputs never replaced without --overwrite,
model files loaded without running code, every CLI's errors as one line, integer data at their bit depth."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sschsr.cli.predict import main as predict_main
from sschsr.data.io import clean_stale, reserve, write_npy
from sschsr.errors import InputError
from test_predict import BANDS, HR_SIZE, LR_SIZE, SCALE, argv, listing, make_inputs, smooth_cube, tiny_sschsr

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline"}


def one_error_line(stderr: str) -> str:
    """The single ``error: ...`` line of ``stderr`` (asserted to be all of it)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    from sschsr.checkpoints import save_model
    from sschsr.models.baselines import Bicubic

    root = tmp_path_factory.mktemp("models")
    return {
        "sschsr": save_model(tiny_sschsr(), root / "sschsr_x4.safetensors", scale=SCALE),
        "bicubic": save_model(Bicubic(BANDS), root / "bicubic_x4.safetensors", scale=SCALE),
    }


@pytest.fixture()
def inputs(tmp_path) -> dict[str, Path]:
    return make_inputs(tmp_path)


# ------------------------------------------------------------------------- 1. no silent overwrite


def test_two_concurrent_runs_on_one_output(inputs, model_files):
    """Started together on one --out: exactly one writes, the other exits 2 with one error line, and
    nothing but the output is left beside it."""
    cmd = [str(BIN / "sschsr-predict"), *argv(inputs, model_files["sschsr"], "--tta", "2")]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 2], results
    _, out, err = next(r for r in results if r[0] == 2)
    line = one_error_line(err)
    assert str(inputs["out"]) in line and ("--overwrite" in line or "another run" in line)
    assert out == ""
    assert sorted(os.listdir(inputs["out"].parent)) == ["sr.npy"]
    assert np.load(inputs["out"]).shape == (HR_SIZE, HR_SIZE, BANDS)


def test_an_output_held_by_another_run_is_refused_at_once(inputs, model_files, capsys):
    before = listing(inputs["dir"])
    with reserve(inputs["out"]):
        assert predict_main(argv(inputs, model_files["bicubic"])) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "another run" in line and f"pid {os.getpid()}" in line
    assert listing(inputs["dir"]) == before  # the lock is gone with the holder
    assert predict_main(argv(inputs, model_files["bicubic"])) == 0
    assert sorted(os.listdir(inputs["out"].parent)) == ["sr.npy"]


def test_a_file_that_appears_during_the_compute_is_kept(inputs, model_files, capsys, monkeypatch):
    """Another program writes OUT while the model runs: without --overwrite it is kept, exit 2."""
    import sschsr.cli.predict as predict

    real = predict.predict_tiled

    def meanwhile(*args, **kwargs):
        inputs["out"].write_bytes(b"theirs")
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "predict_tiled", meanwhile)
    assert predict_main(argv(inputs, model_files["bicubic"])) == 2
    assert "exists" in one_error_line(capsys.readouterr().err)
    assert inputs["out"].read_bytes() == b"theirs"
    assert sorted(os.listdir(inputs["out"].parent)) == ["sr.npy"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_found_before_the_compute(inputs, model_files, capsys, monkeypatch):
    import sschsr.cli.predict as predict

    monkeypatch.setattr(predict, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    folder = inputs["out"].parent
    folder.chmod(0o555)
    try:
        assert predict_main(argv(inputs, model_files["bicubic"])) == 2
    finally:
        folder.chmod(0o755)
    assert "not writable" in one_error_line(capsys.readouterr().err)


def test_a_read_only_folder_check(tmp_path, monkeypatch):
    """The same check where the tests run as root: the folder's access as the system reports it."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(InputError, match="not writable"), reserve(tmp_path / "x.npy"):
        pass
    assert os.listdir(tmp_path) == []


def test_the_leftover_of_a_killed_write_is_removed_by_the_next_run(inputs, model_files):
    """SIGKILL during a write leaves a temporary file named with the dead process's id; the next run on
    that output removes it (and leaves the temporary files of live processes alone)."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from sschsr.data.io.writers import _atomic
        with _atomic({str(inputs["out"])!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, timeout=120)
    assert proc.returncode == -9
    left = [n for n in os.listdir(inputs["out"].parent) if n != "sr.npy"]
    assert len(left) == 1 and left[0].startswith(".sr.npy.") and ".tmp" in left[0], left
    live = inputs["out"].parent / f".sr.npy.{os.getpid()}-0123abcd.tmp.npy"  # a write in progress
    live.write_bytes(b"x")
    other = inputs["out"].parent / f".sr.npy.{dead_pid()}-deadbeef.tmp.npy.aux.xml"
    other.write_bytes(b"x")
    res = subprocess.run(
        [str(BIN / "sschsr-predict"), *argv(inputs, model_files["bicubic"])],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(inputs["out"].parent)) == sorted(["sr.npy", live.name])


def test_clean_stale_only_removes_dead_writers_files(tmp_path):
    target = tmp_path / "a.npy"
    dead, mine = dead_pid(), os.getpid()
    names = [
        f".a.npy.{dead}-0123abcd.tmp.npy",  # removed
        f".a.npy.{mine}-0123abcd.tmp.npy",  # this process: kept
        f".a.npy.{dead}-zz.tmp.npy",  # not a name this package makes: kept
        f".b.npy.{dead}-0123abcd.tmp.npy",  # another target: kept
        ".a.npy.lock",
    ]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    assert clean_stale(target) == [tmp_path / names[0]]
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:])
    write_npy(target, np.zeros(2))  # a write cleans first too, and leaves only its output
    assert sorted(os.listdir(tmp_path)) == sorted(["a.npy", *names[1:]])
    with pytest.raises(InputError, match="exists"):
        write_npy(target, np.ones(2), exclusive=True)
    np.testing.assert_array_equal(np.load(target), np.zeros(2))


# ------------------------------------------------------------------------- 2. safe loading


class Payload:
    """What a malicious checkpoint holds: unpickling it creates ``marker`` (it would run any code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint that looks like a training checkpoint of the full model, with a pickle payload."""
    from sschsr.checkpoints import MODEL_KEY, model_info
    from sschsr.models.baselines import Bicubic

    torch.save(
        {
            "state_dict": {"net.w": torch.zeros(1)},
            MODEL_KEY: model_info(Bicubic(BANDS), SCALE),
            "optimizer_states": [],
            "loops": {},
            "global_step": 1,
            "payload": Payload(marker),
        },
        path,
    )
    return path


def test_the_payload_runs_when_loaded_unsafely(tmp_path):
    """The test's payload is real: torch.load(weights_only=False) creates the marker."""
    marker = tmp_path / "ran"
    torch.load(evil_checkpoint(tmp_path / "evil.ckpt", marker), weights_only=False)
    assert marker.exists()


SMOKE = ["experiment=smoke", "logger=none", "trainer.max_steps=2", "trainer.enable_progress_bar=false"]
EVAL_DATA = ["data.source.num=3", "data.source.size=64", "data.val=1", "data.test=1", "data.num_workers=0"]


@pytest.mark.parametrize(
    "cli",
    ["predict --ckpt", "eval ckpt_path", "eval baselines.single_image", "train ckpt_path",
     "train model.init_ckpt", "train model.flow_ckpt"],
)  # fmt: skip
def test_a_pickle_payload_runs_under_no_cli(cli, inputs, tmp_path):
    """Even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (torch's switch back to unsafe loading where a caller
    does not say weights_only): refused with one error line naming the file, the payload not run."""
    marker = tmp_path / "ran"
    evil = evil_checkpoint(tmp_path / "evil.ckpt", marker)
    script, key = cli.split()
    run_dir = tmp_path / "run"
    if script == "predict":
        args = argv(inputs, evil)
    elif script == "eval":
        ckpt = "bicubic" if key != "ckpt_path" else evil
        args = [f"ckpt_path={ckpt}", f"{key}={evil}", *EVAL_DATA, f"hydra.run.dir={run_dir}", "device=cpu"]
    else:
        args = [*SMOKE, f"{key}={evil}", f"hydra.run.dir={run_dir}"]
    env = {**ENV, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    res = subprocess.run(
        [str(BIN / f"sschsr-{script}"), *args], capture_output=True, text=True, env=env, timeout=300,
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    line = one_error_line(res.stderr)
    assert str(evil) in line and "plain tensors and values" in line
    assert not marker.exists()
    assert not run_dir.exists()  # checked before Hydra made the run folder
    assert not inputs["out"].exists()


def test_resume_loads_with_weights_only(tmp_path):
    """A real resume reads the checkpoint with weights_only=True (all the package's checkpoints hold plain
    values only), also with torch's override set, and continues from its step."""
    first, second = tmp_path / "first", tmp_path / "second"
    env = {**ENV, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    for run_dir, extra in (
        (first, ["trainer.max_steps=2", "callbacks.last_checkpoint.every_n_train_steps=2"]),
        (second, ["trainer.max_steps=3", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"]),
    ):
        res = subprocess.run(
            [str(BIN / "sschsr-train"), *SMOKE, *extra, f"hydra.run.dir={run_dir}"],
            capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
    assert "Restored all states" in res.stderr + res.stdout
    ckpt = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3


def crafted_model(tmp_path: Path, name: str, change) -> Path:
    """A model file of the tiny network whose model description ``change(info)`` alters."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from sschsr.checkpoints import MODEL_KEY, save_model
    from sschsr.models.baselines import Bicubic

    source = save_model(Bicubic(BANDS), tmp_path / "source.safetensors", scale=SCALE)
    with safe_open(str(source), framework="pt") as f:
        meta = f.metadata()
    info = json.loads(meta[MODEL_KEY])
    change(info)
    out = tmp_path / f"{name}.safetensors"
    save_file(load_file(str(source)), str(out), metadata={**meta, MODEL_KEY: json.dumps(info)})
    return out


def _set(**values):
    return lambda info: info.update(values)


def _net(**values):
    return lambda info: info["net"].update(values)


HUGE_WARPNET = {"_target_": "sschsr.models.warpnet.WarpNet", "widths": [60000, 60000, 60000, 60000]}
PART = {"file": "flow_net-0123.safetensors", "sha256": "0" * 64}
DEEP: dict = {"_target_": "sschsr.models.sschsr.SSCHSR", "n_bands": BANDS}
for _ in range(12):
    DEEP = {"_target_": "sschsr.models.sschsr.SSCHSR", "n_bands": BANDS, "flow_net": DEEP}

# name -> (how the description is changed, a word the one error line must hold)
CRAFTED = {
    "torch class through a module attribute": (
        _net(_target_="sschsr.inference.nn.Linear", in_features=3, out_features=3),
        "not a network of this version",
    ),
    "a function of the package": (_net(_target_="sschsr.checkpoints.model.load_model"), "not a network"),
    "outside the package": (_net(_target_="os.system", command="touch x"), "only networks of the sschsr"),
    "camera as a path": (_set(camera="/etc/passwd"), "camera"),
    "scale not a number": (_set(scale="abc"), "scale"),
    "scale 3": (_set(scale=3), "not a supported scale"),
    "scale not whole": (_set(scale=4.5), "not a whole number"),
    "n_bands not a number": (_set(n_bands="x"), "n_bands"),
    "n_bands huge": (_set(n_bands=10**9), "n_bands"),
    "n_bands negative": (_set(n_bands=-3), "n_bands"),
    "an argument the class does not take": (_net(evil=1), "takes no argument 'evil'"),
    "a number beyond reason": (_net(n_bands=10**12), "out of range"),
    "a huge network": (_set(net=HUGE_WARPNET), "parameters"),
    "part outside the folder": (_set(parts={"flow_net": {**PART, "file": "../x.safetensors"}}), "beside it"),
    "part by absolute path": (_set(parts={"flow_net": {**PART, "file": "/etc/passwd"}}), "beside it"),
    "part without hash": (_set(parts={"flow_net": {"file": PART["file"]}}), "SHA-256"),
    "deeply nested": (_set(net=DEEP), "nested more than"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_metadata_is_refused_with_one_line(case, inputs, tmp_path, capsys):
    change, word = CRAFTED[case]
    path = crafted_model(tmp_path, "crafted", change)
    before = listing(inputs["dir"])
    assert predict_main(argv(inputs, path)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert word in line, line
    assert "passwd" not in line or case in ("camera as a path", "part by absolute path")
    assert listing(inputs["dir"]) == before


def test_a_part_linked_out_of_the_folder_is_refused(tmp_path):
    from sschsr.checkpoints import load_model, save_model

    folder = tmp_path / "model"
    folder.mkdir()
    model = save_model(tiny_sschsr(), folder / "m.safetensors", scale=SCALE, parts=["flow_net"])
    part = next(folder.glob("flow_net-*.safetensors"))
    elsewhere = tmp_path / "elsewhere.safetensors"
    part.rename(elsewhere)
    part.symlink_to(elsewhere)
    with pytest.raises(InputError, match="leads out of the folder"):
        load_model(model, SCALE)


def test_stage_files_are_checked_too(tmp_path):
    """The flow network's and WarpNet's own files (model.flow_ckpt, model.warp_ckpt): their stored arguments
    checked, the network's size bounded."""
    import json

    from safetensors.torch import save_file

    from sschsr.checkpoints import load_warpnet
    from sschsr.models.warpnet import CONFIG_KEY

    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={CONFIG_KEY: json.dumps({"widths": [60000] * 4})})
    with pytest.raises(InputError, match="parameters"):
        load_warpnet(path)
    save_file({"x": torch.zeros(1)}, str(path), metadata={CONFIG_KEY: json.dumps({"evil": 1})})
    with pytest.raises(InputError, match="takes no argument 'evil'"):
        load_warpnet(path)
    save_file({"x": torch.zeros(1)}, str(path), metadata={CONFIG_KEY: "{not json"})
    with pytest.raises(InputError, match="cannot read"):
        load_warpnet(path)


def test_the_shipped_weights_pass_the_checks():
    from sschsr.checkpoints import load_model, shipped_weights

    for scale in (4, 8):
        if shipped_weights(scale).is_file():
            assert load_model(None, scale).info["scale"] == scale


# ------------------------------------------------------------------------- 3. the Hydra CLIs' errors

# (script, overrides, what the one line must hold)
BAD_CONFIGS = {
    "train unknown data option": ("train", ["data=nope"], "Available options in 'data'"),
    "train unknown experiment": ("train", ["experiment=nope"], "smoke"),
    "train override without =": ("train", ["foo"], "Error parsing override 'foo'"),
    "train unknown key": ("train", ["x=2"], "+x=2"),
    "train scale 3": ("train", ["scale=3"], "scale=3: expected one of 4, 8, 16"),
    "train scale abc": ("train", ["scale=abc"], "scale=abc"),
    "train batch size 0": ("train", ["data.batch_size=0"], "data.batch_size=0"),
    "train crop size": ("train", ["data.crop_size=30"], "data.crop_size=30"),
    "train max_steps abc": ("train", ["trainer.max_steps=abc"], "trainer.max_steps=abc"),
    "train missing resume file": ("train", ["ckpt_path=nope.ckpt"], "ckpt_path=nope.ckpt"),
    "train resume file not a checkpoint": ("train", ["ckpt_path=junk.ckpt"], "ckpt_path=junk.ckpt"),
    "train resume of weights only": ("train", ["ckpt_path=weights.ckpt"], "model.init_ckpt"),
    "train GeoTIFF without a path": ("train", ["data=geotiff"], "data.source.path"),
    "train GeoTIFF missing file": ("train", ["data=geotiff", "data.source.path=no.tif"], "no.tif"),
    "train multirun unknown option": ("train", ["-m", "data=nope"], "Available options in 'data'"),
    "train unknown flag": ("train", ["--nope"], "unrecognized arguments: --nope"),
    "eval no ckpt_path": ("eval", [], "ckpt_path"),
    "eval tile 0": ("eval", ["ckpt_path=bicubic", "tile=0"], "tile=0"),
    "eval scale abc": ("eval", ["ckpt_path=bicubic", "scale=abc"], "scale=abc"),
    "eval unknown degradation": ("eval", ["ckpt_path=bicubic", "degradation=nope"], "degradation"),
    "eval missing checkpoint": ("eval", ["ckpt_path=nope.ckpt"], "ckpt_path=nope.ckpt"),
    "eval checkpoint not a checkpoint": ("eval", ["ckpt_path=junk.ckpt"], "junk.ckpt"),
    "eval GeoTIFF without a path": ("eval", ["ckpt_path=bicubic", "data=geotiff"], "data.source.path"),
    "eval bad device": ("eval", ["ckpt_path=bicubic", "device=tpu"], "device=tpu"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configuration_is_one_error_line(case, tmp_path):
    script, overrides, word = BAD_CONFIGS[case]
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    torch.save({"state_dict": {}}, tmp_path / "weights.ckpt")
    run_dir = tmp_path / "run"
    extra = [*SMOKE] if script == "train" else []
    where = "hydra.sweep.dir" if "-m" in overrides else "hydra.run.dir"
    flags = [o for o in overrides if o.startswith("-")]
    overrides = [o for o in overrides if not o.startswith("-")]
    res = subprocess.run(
        [str(BIN / f"sschsr-{script}"), *flags, *extra, *overrides, f"{where}={run_dir}"],
        capture_output=True, text=True, env=ENV, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-3000:]
    assert word in one_error_line(res.stderr)
    assert res.stdout == ""
    assert not run_dir.exists() or "-m" in overrides  # nothing left behind (a multirun's sweep folder aside)
    assert not (run_dir / "checkpoints").exists()


def test_hydra_full_error_still_shows_everything(tmp_path):
    env = {**ENV, "HYDRA_FULL_ERROR": "1"}
    res = subprocess.run(
        [str(BIN / "sschsr-train"), "data=nope", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 1 and "Traceback" in res.stderr and "Config search path" in res.stderr


def test_input_errors_inside_instantiate_are_unwrapped(capsys):
    """hydra.utils.instantiate wraps a constructor's InputError in an InstantiationException: the CLIs'
    handler finds it and prints its message alone."""
    from hydra.errors import InstantiationException

    from sschsr.cli._common import exit_on_input_error, input_error_in

    def build():
        try:
            raise InputError("data.source.path: no such file")
        except InputError as e:
            raise InstantiationException("Error in call to target 'x'") from e

    with pytest.raises(SystemExit) as exit_:
        exit_on_input_error(build)()
    assert exit_.value.code == 2
    assert one_error_line(capsys.readouterr().err) == "error: data.source.path: no such file"
    assert input_error_in(ValueError("x")) is None


def test_hydra_errors_condensed():
    from hydra.errors import MissingConfigException

    from sschsr.cli._hydra import one_line

    error = MissingConfigException(
        "In 'train': Could not find 'data/nope'\n\nAvailable options in 'data':\n\tcave\n\tprocedural\n"
        "Config search path:\n\tprovider=hydra, path=pkg://hydra.conf"
    )
    assert (
        one_line(error)
        == "In 'train': Could not find 'data/nope'; Available options in 'data': cave, procedural"
    )


# ------------------------------------------------------------------------- 4. values users have


def _codes(bits: int, seed: int = 0) -> np.ndarray:
    """A smooth scene as ``bits``-bit codes, its largest value near the top of that range."""
    return np.round(smooth_cube(LR_SIZE, LR_SIZE, BANDS, seed=seed) * (2**bits - 1)).astype(np.uint16)


def test_12_bit_data_in_uint16_give_the_output_of_the_same_data_in_0_1(inputs, model_files, capsys):
    codes = _codes(12)
    assert codes.max() < 4096
    np.save(inputs["lr"], codes)
    assert predict_main(argv(inputs, model_files["sschsr"], "--tta", "2")) == 0
    from_codes = np.load(inputs["out"]) / 4095.0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "12-bit" in line]
    assert len(notes) == 1 and "divided by 4095, not 65535" in notes[0] and "--bit-depth" in notes[0]
    np.save(inputs["lr"], codes.astype(np.float32) / 4095.0)
    assert predict_main(argv(inputs, model_files["sschsr"], "--tta", "2", "--overwrite")) == 0
    from_float = np.load(inputs["out"])
    np.testing.assert_allclose(from_codes, from_float, atol=2e-5)
    # stated: the same; stated wrongly, a clear error
    np.save(inputs["lr"], codes)
    assert (
        predict_main(argv(inputs, model_files["sschsr"], "--tta", "2", "--overwrite", "--bit-depth", "12"))
        == 0
    )
    np.testing.assert_allclose(np.load(inputs["out"]) / 4095.0, from_float, atol=2e-5)
    capsys.readouterr()
    assert predict_main(argv(inputs, model_files["sschsr"], "--overwrite", "--bit-depth", "10")) == 2
    assert "exceed --bit-depth 10" in one_error_line(capsys.readouterr().err)


def test_full_range_16_bit_data_are_divided_by_65535(inputs, model_files, capsys):
    np.save(inputs["lr"], _codes(16))
    assert predict_main(argv(inputs, model_files["bicubic"])) == 0
    assert "bit" not in capsys.readouterr().err
    assert 0 <= np.load(inputs["out"]).min() and np.load(inputs["out"]).max() <= 65535


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_geotiff_nbits_metadata_states_the_depth(tmp_path):
    import rasterio

    from sschsr.data.io import read_cube

    path = tmp_path / "lr.tif"
    codes = _codes(10)
    with rasterio.open(
        path, "w", driver="GTiff", width=LR_SIZE, height=LR_SIZE, count=BANDS, dtype="uint16", NBITS=12
    ) as dst:
        dst.write(codes.transpose(2, 0, 1))
    cube = read_cube(path)
    assert cube.meta["nbits"] == 12
    from sschsr.cli.predict import input_scaling

    norm, top, notes = input_scaling(cube, cube.data, None, "lr.tif")
    assert top == 4095 and notes == []  # the file's depth, not the smallest that holds the data (10)


@pytest.mark.parametrize(
    "case, word",
    [("zero", "every value is zero"), ("constant", "every value is the same (0.25)"), ("nodata", "nodata")],
)
def test_nothing_to_super_resolve_is_refused(case, word, inputs, model_files, capsys, tmp_path):
    if case == "nodata":
        import rasterio
        from affine import Affine

        lr = tmp_path / "lr.tif"
        with rasterio.open(
            lr, "w", driver="GTiff", width=LR_SIZE, height=LR_SIZE, count=BANDS, dtype="float32",
            nodata=-9999.0, crs="EPSG:32633", transform=Affine(30, 0, 500000, 0, -30, 4000000),
        ) as dst:  # fmt: skip
            dst.write(np.full((BANDS, LR_SIZE, LR_SIZE), -9999.0, np.float32))
        inputs["lr"] = lr
    else:
        np.save(inputs["lr"], np.full((LR_SIZE, LR_SIZE, BANDS), 0.0 if case == "zero" else 0.25, np.float32))
    before = listing(inputs["dir"])
    assert predict_main(argv(inputs, model_files["bicubic"])) == 2
    assert word in one_error_line(capsys.readouterr().err)
    assert listing(inputs["dir"]) == before


def test_negative_values_are_accepted_with_a_note_and_outputs_clamped(inputs, model_files, capsys):
    cube = smooth_cube(LR_SIZE, LR_SIZE, BANDS) - 0.25  # some negative reflectance
    assert cube.min() < 0
    np.save(inputs["lr"], cube)
    assert predict_main(argv(inputs, model_files["bicubic"])) == 0
    err = capsys.readouterr().err
    assert sum("negative values" in line for line in err.splitlines()) == 1
    sr = np.load(inputs["out"])
    assert sr.min() == 0.0 and sr.max() <= 1.0
    assert predict_main(argv(inputs, model_files["bicubic"], "--overwrite", "--no-clamp", "--quiet")) == 0
    assert capsys.readouterr().err == ""
    raw = np.load(inputs["out"])
    assert raw.min() < 0
    np.testing.assert_array_equal(sr, np.clip(raw, 0, 1))


def test_warnings_do_not_break_the_one_line_rule(inputs, model_files, capsys, monkeypatch):
    """A numpy RuntimeWarning on the way: with an error, the error line alone; on success, a note after."""
    import warnings

    import sschsr.cli.predict as predict

    real = predict.read_rgb

    def warns(path):
        warnings.warn("invalid value encountered in divide", RuntimeWarning, stacklevel=1)
        return real(path)

    monkeypatch.setattr(predict, "read_rgb", warns)
    assert predict_main(argv(inputs, model_files["bicubic"], scale=8)) == 2
    one_error_line(capsys.readouterr().err)
    assert predict_main(argv(inputs, model_files["bicubic"])) == 0
    err = capsys.readouterr().err.splitlines()
    assert "note: RuntimeWarning: invalid value encountered in divide" in err


def test_every_torch_load_of_the_package_says_weights_only_true():
    """Not left to torch's default (unsafe before 2.6, and switched back by TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    where a caller says nothing), nor to Lightning's (trainer.fit/test take weights_only too)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    calls = []
    for path in [*(root / "src").rglob("*.py"), *(root / "experiments").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name = node.func.attr
            owner = ast.unparse(node.func.value)
            if (
                (owner, name) == ("torch", "load")
                or name in ("fit", "test", "validate", "predict")
                and any(k.arg == "ckpt_path" for k in node.keywords)
            ):
                safe = any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords
                )
                calls.append((f"{path.relative_to(root)}:{node.lineno}", safe))
    assert calls and all(safe for _, safe in calls), [where for where, safe in calls if not safe]
