"""Atomic writers (``.npy``, text, JSON, PNG, GeoTIFF): a hidden temporary file beside the target, renamed.

Temporary files are named ``.<name>.<pid>-<random>.tmp<suffix>``: a write of the same target by a later
process removes those whose process is gone (a run killed part-way leaves nothing for long).
:func:`reserve` holds an output for one process from before its compute to its publication, and
``exclusive=True`` publishes without ever replacing a file that appeared meanwhile (a hard link, which
fails if the name exists)."""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import struct
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sschsr.data.io._checks import _quiet_rasterio
from sschsr.data.io.records import GeoInfo
from sschsr.errors import InputError


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user's counts: it may be writing)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def _temp_pattern(path: Path) -> re.Pattern[str]:
    """The names of :func:`_atomic`'s temporary files for ``path`` (GDAL side-cars included): group 1 the pid."""
    return re.compile(re.escape(f".{path.name}.") + r"(\d+)-[0-9a-f]{8}\.tmp.*")


def clean_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files left beside ``path`` by writes whose process is gone (killed part-way);
    those of running processes stay. Returns the files removed."""
    path = Path(path)
    pattern = _temp_pattern(path)
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if m and not process_alive(int(m.group(1))):
            try:
                (path.parent / name).unlink()
            except FileNotFoundError:  # another process cleaned it first
                continue
            except OSError:
                continue
            removed.append(path.parent / name)
    return removed


def _publish(tmp: Path, path: Path, exclusive: bool) -> None:
    """Move ``tmp`` onto ``path``; with ``exclusive`` never replace a ``path`` that exists (InputError)."""
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if the name exists: no window for another writer
    except FileExistsError:
        raise InputError(
            f"{path} exists (it appeared while this run was computing): pass --overwrite to replace it"
        ) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # a file system without hard links: check, then rename (a window of microseconds)
        if path.exists():
            raise InputError(f"{path} exists: pass --overwrite to replace it") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextmanager
def _atomic(path: str | os.PathLike, exclusive: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On any failure (or interruption) the temporary file is removed and an existing ``path`` is untouched.
    The temporary name carries this process's id: leftovers of killed processes are removed first
    (:func:`clean_stale`). With ``exclusive``, a ``path`` that exists when the block ends is kept and
    InputError raised (see :func:`_publish`).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: cannot write, folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: cannot write, a folder of that name exists")
    clean_stale(path)
    # same folder, so os.replace is a rename within one file system (atomic); keep the suffix for drivers
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    side = tmp.with_name(tmp.name + ".aux.xml")  # GDAL's side-car metadata, should a driver write one
    try:
        yield tmp
        _publish(tmp, path, exclusive)
        if side.exists():
            os.replace(side, path.with_name(path.name + ".aux.xml"))
    except BaseException:
        tmp.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        raise


def _lock_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _holder(lock: Path) -> str:
    """``" (pid N)"`` of the process that holds ``lock``, as it wrote it; empty when unknown."""
    try:
        pid = lock.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


@contextmanager
def reserve(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Hold the output ``path`` for this process for the block: the folder checked writable, a lock taken
    (``.<name>.lock`` beside it, an advisory ``flock`` the system releases should the process die), and,
    without ``overwrite``, ``path`` checked absent once the lock is held. Another process reserving the
    same ``path`` meanwhile gets InputError at once. The lock file is removed when the block ends.

    Raises:
        InputError: a missing or unwritable folder, ``path`` exists (without ``overwrite``), or another
            process holds it.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"{path}: cannot write, folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write, folder {folder} is not writable")
    lock = _lock_name(path)
    fd = _take_lock(lock, path)
    try:
        if path.exists() and not overwrite:
            raise InputError(f"{path} exists: pass --overwrite to replace it")
        clean_stale(path)
        yield path
    finally:
        lock.unlink(missing_ok=True)  # while held: a process waiting on the old file sees it gone, retries
        os.close(fd)


def _take_lock(lock: Path, path: Path) -> int:
    """An open descriptor of ``lock`` holding an exclusive ``flock`` on the file that is at ``lock`` now."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the existence checks and exclusive publication remain
        fcntl = None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"{path}: cannot write in {path.parent} ({e.strerror})") from None
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(
                    f"{path}: another run{_holder(lock)} is writing this output now: wait for it to end, "
                    "or write elsewhere"
                ) from None
            raise
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the holder removed the file as we opened it: take the new one


def write_npy(path: str | os.PathLike, array: np.ndarray, *, exclusive: bool = False) -> None:
    """Save ``array`` as ``.npy`` atomically (any shape and dtype; cubes are HWC float32 by convention).
    ``exclusive``: never replace an existing file (InputError), as for every writer here."""
    array = np.asarray(array)
    with _atomic(path, exclusive) as tmp, open(tmp, "xb") as f:
        np.save(f, array, allow_pickle=False)


def write_text(path: str | os.PathLike, text: str, *, exclusive: bool = False) -> None:
    """Save ``text`` atomically (a reader sees the old file or the new one, never a part)."""
    with _atomic(path, exclusive) as tmp, open(tmp, "x") as f:
        f.write(text)


def write_json(path: str | os.PathLike, record: Any, *, exclusive: bool = False) -> None:
    """Save ``record`` as indented JSON atomically."""
    write_text(path, json.dumps(record, indent=2, default=str) + "\n", exclusive=exclusive)


def _to_image_codes(rgb: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8 (rounded, clipped); uint8 / uint16 as given; shape checked."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 3 and rgb.shape[2] == 1:
        rgb = rgb[..., 0]
    if not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] in (3, 4))) or rgb.size == 0:
        raise ValueError(f"write_png expects (H, W), (H, W, 3) or (H, W, 4), got {rgb.shape}")
    if rgb.dtype in (np.uint8, np.uint16):
        return rgb
    if np.issubdtype(rgb.dtype, np.floating):
        if not np.isfinite(rgb).all():
            raise ValueError("write_png: image holds NaN or Inf values")
        return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"write_png expects float in [0, 1], uint8 or uint16, got {rgb.dtype}")


def _png16_bytes(codes: np.ndarray) -> bytes:
    """A 16-bit PNG (gray, RGB or RGBA), which Pillow cannot write for colour images."""
    h, w = codes.shape[:2]
    c = 1 if codes.ndim == 2 else codes.shape[2]
    colour_type = {1: 0, 3: 2, 4: 6}[c]
    rows = np.zeros((h, 1 + 2 * w * c), dtype=np.uint8)  # leading 0 per row: filter type "None"
    rows[:, 1:] = codes.astype(">u2").reshape(h, w * c).view(np.uint8)

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def write_png(path: str | os.PathLike, rgb: np.ndarray, *, exclusive: bool = False) -> None:
    """Save an image as PNG atomically.

    Args:
        rgb: ``(H, W, 3)`` (or ``(H, W)``, ``(H, W, 4)``): float in [0, 1] -> 8 bit (clipped, rounded);
            uint8 or uint16 written as given (16-bit PNG).
    """
    codes = _to_image_codes(rgb)
    with _atomic(path, exclusive) as tmp:
        if codes.dtype == np.uint16:
            with open(tmp, "xb") as f:
                f.write(_png16_bytes(codes))
        else:
            Image.fromarray(codes).save(tmp, format="PNG")


def write_geotiff(
    path: str | os.PathLike,
    array: np.ndarray,
    geo: GeoInfo | None = None,
    band_descriptions: Sequence[str] | None = None,
    *,
    wavelengths: Sequence[float] | np.ndarray | None = None,
    exclusive: bool = False,
) -> None:
    """Save a cube as a float32 GeoTIFF atomically, bands first on disk.

    Args:
        array: ``(H, W, C)`` (or ``(H, W)``), written as float32.
        geo: CRS, transform, nodata, band descriptions and wavelengths to keep (e.g. ``geo.scaled(s)``
            for a super-resolved output); None writes a plain, non-georeferenced TIFF.
        band_descriptions: one per band, overriding ``geo.band_descriptions``.
        wavelengths: ``(C,)`` nm, overriding ``geo.wavelengths``; stored as per-band ``wavelength`` tags.
    """
    import rasterio

    data = np.asarray(array, dtype=np.float32)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.size == 0:
        raise ValueError(f"write_geotiff expects (H, W, C), got {np.shape(array)}")
    h, w, c = data.shape
    geo = geo or GeoInfo()
    descriptions = band_descriptions if band_descriptions is not None else geo.band_descriptions
    if descriptions is not None and len(descriptions) != c:
        raise ValueError(f"write_geotiff: {len(descriptions)} band descriptions for {c} bands")
    wl = wavelengths if wavelengths is not None else geo.wavelengths
    if wl is not None and len(wl) != c:
        if wavelengths is not None:
            raise ValueError(f"write_geotiff: {len(wl)} wavelengths for {c} bands")
        wl = None  # geo from another band set (e.g. a model with other outputs): drop, do not mislabel
    profile = dict(
        driver="GTiff", width=w, height=h, count=c, dtype="float32", crs=geo.crs, transform=geo.transform,
        nodata=geo.nodata, compress="deflate", predictor=3, interleave="band", BIGTIFF="IF_SAFER",
    )  # fmt: skip
    if geo.transform is None:
        profile.pop("transform")
    with _atomic(path, exclusive) as tmp, _quiet_rasterio(), rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data.transpose(2, 0, 1))
        for b in range(c):
            if descriptions is not None:
                dst.set_band_description(b + 1, str(descriptions[b]))
            if wl is not None:
                dst.update_tags(b + 1, wavelength=repr(float(wl[b])), wavelength_units="Nanometers")
