"""Issue 32, class 2: every file is written atomically and read back with an error that names it.

The kill test pauses a writer through ``mdcvkit._io._before_rename`` (the hook runs after the
temporary file is written and before the rename), cuts the temporary file in half as an interrupted
write would, and kills the process with SIGKILL: the previous file must still load. It waits for
the hook to signal, never for a time.
"""

import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

import mdcvkit as mk
from mdcvkit._io import atomic_path, load_torch
from mdcvkit.models import AutoEncoder
from mdcvkit.training import Trainer

CHILD = r"""
import sys, time, warnings
from pathlib import Path
import numpy as np
import mdcvkit as mk
import mdcvkit._io as io

kind, path, marker = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

def pause(tmp):
    data = tmp.read_bytes()
    tmp.write_bytes(data[: len(data) // 2])  # the state of a write cut short
    marker.write_text(str(tmp))
    time.sleep(3600)  # killed here

io._before_rename = pause
warnings.simplefilter("ignore")
if kind == "checkpoint":
    from mdcvkit.models import AutoEncoder
    from mdcvkit.training import Trainer
    x = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    Trainer(max_epochs=4, checkpoint=path, n_threads=1).fit(AutoEncoder(4, 1, hidden=(6,)), x)
elif kind == "cv":
    mk.AutoencoderCV.load(sys.argv[4]).save(path)
elif kind == "torchscript":
    mk.AutoencoderCV.load(sys.argv[4]).to_torchscript(path)
elif kind == "netcdf":
    from mdcvkit.cli import _save_netcdf
    import xarray as xr
    _save_netcdf(xr.DataArray(np.ones(5), dims="frame", name="cv"), path)
"""


@pytest.fixture(scope="module")
def saved_cv(tmp_path_factory):
    heavy = mk.datasets.alanine_dipeptide().select_atoms("not name H*")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cv = mk.AutoencoderCV(heavy, n_cv=2, hidden=(8,), max_epochs=2, seed=0).run(step=500)
    path = tmp_path_factory.mktemp("cv") / "model.pt"
    cv.save(path)
    return path


def _write_previous(kind, path, saved_cv):
    if kind == "checkpoint":
        x = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Trainer(max_epochs=2, checkpoint=path, n_threads=1).fit(AutoEncoder(4, 1, hidden=(6,)), x)
    elif kind == "cv":
        mk.AutoencoderCV.load(saved_cv).save(path)
    elif kind == "torchscript":
        mk.AutoencoderCV.load(saved_cv).to_torchscript(path)
    else:
        xr.DataArray(np.zeros(5), dims="frame", name="cv").to_netcdf(path)


def _read(kind, path):
    if kind == "checkpoint":
        return load_torch(path, "a checkpoint", weights_only=False)["epoch"]
    if kind == "cv":
        return mk.AutoencoderCV.load(path).results.model.model.get_params()
    if kind == "torchscript":
        return float(torch.jit.load(str(path))(torch.zeros(1, 10, 3)).sum())
    with xr.open_dataarray(path) as data:
        return data.values.tolist()


@pytest.mark.parametrize("kind", ["checkpoint", "cv", "torchscript", "netcdf"])
def test_sigkill_in_the_middle_of_a_save_leaves_the_previous_file_loadable(tmp_path, kind, saved_cv):
    path = tmp_path / ("out.nc" if kind == "netcdf" else "out.pt")
    _write_previous(kind, path, saved_cv)
    before = _read(kind, path)
    marker = tmp_path / "paused"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), kind, str(path), str(marker), str(saved_cv)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while not marker.exists():  # the hook signals; no guess of how long a save takes
            if child.poll() is not None:
                pytest.fail(f"the writer ended before pausing: {child.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert _read(kind, path) == before  # the previous file, whole
    half = marker.read_text()
    assert os.path.basename(half).startswith(".out.") and half != str(path) and os.path.exists(half)
    data = path.read_bytes()
    with atomic_path(path) as tmp:  # the next save through the helper removes what the killed writer left
        tmp.write_bytes(data)
    assert not os.path.exists(half) and _read(kind, path) == before


def test_atomic_path_fsyncs_and_calls_the_hook_before_the_rename(tmp_path, monkeypatch):
    import mdcvkit._io as io

    seen = []
    monkeypatch.setattr(io, "_before_rename", lambda tmp: seen.append((tmp.read_text(), (tmp_path / "a").exists())))
    with atomic_path(tmp_path / "a") as tmp:
        tmp.write_text("new")
    assert seen == [("new", False)] and (tmp_path / "a").read_text() == "new"


@pytest.mark.parametrize(("content", "match"), [
    (None, "no such file; expected a training checkpoint"),
    (b"", "is an empty file, not a training checkpoint"),
    ("text", "is a text file of 4 bytes starting 'text', not a training checkpoint"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is a file of 12 bytes that is not a torch file"),
    ("folder", "is a folder, not a training checkpoint"),
])
def test_trainer_checkpoint_reader_names_the_file(tmp_path, content, match):
    path = tmp_path / "ck.pt"
    if content == "folder":
        path.mkdir()
    elif isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    error = FileNotFoundError if content is None else ValueError
    with pytest.raises(error, match=match):
        load_torch(path, "a training checkpoint", name="checkpoint")
    if content not in (None, "folder"):
        x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
        with pytest.raises(ValueError, match=f"checkpoint='.*ck.pt' {match.split(',')[0]}"):
            Trainer(max_epochs=2, checkpoint=path).fit(AutoEncoder(4, 1, hidden=(6,)), x)


def test_truncated_and_foreign_files_are_refused_by_load(tmp_path, saved_cv):
    data = saved_cv.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.pt' is a truncated or damaged torch file .*, not a CV saved"):
        mk.AutoencoderCV.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="foreign.pt' holds a torch file, but not a CV saved by"):
        mk.AutoencoderCV.load(foreign)
    script = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(script))
    with pytest.raises(ValueError, match="script.pt'"):
        mk.AutoencoderCV.load(script)
    with pytest.raises(TypeError, match="path=3 must be a file path"):
        mk.AutoencoderCV.load(3)


def test_saving_to_an_unwritable_place_names_the_path(tmp_path, saved_cv):
    cv = mk.AutoencoderCV.load(saved_cv)
    with pytest.raises(FileNotFoundError, match="the folder .*nowhere' does not exist"):
        cv.save(tmp_path / "nowhere" / "cv.pt")
    with pytest.raises(IsADirectoryError, match="is a folder; pass the path of a file"):
        cv.save(tmp_path)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="locked"):
            cv.save(locked / "cv.pt")


def test_save_load_round_trip_is_exact(tmp_path, saved_cv):
    cv = mk.AutoencoderCV.load(saved_cv)
    again = mk.AutoencoderCV.load(cv.save(tmp_path / "again.pt"))
    for a, b in zip(cv.results.model.state_dict().values(), again.results.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert again.results.model.model.get_params() == cv.results.model.model.get_params()


def test_read_only_file_or_folder_is_named_before_writing(tmp_path, saved_cv):
    import mdcvkit._io as io

    cv = mk.AutoencoderCV.load(saved_cv)
    target = tmp_path / "ro.pt"
    target.write_text("old")
    target.chmod(0o444)
    if os.access(target, os.W_OK):  # root writes anywhere
        pytest.skip("running as root: permissions are not enforced")
    with pytest.raises(PermissionError, match="ro.pt': the file is read-only"):
        cv.save(target)
    assert target.read_text() == "old" and io._before_rename is None


def test_unwritable_folder_is_named(tmp_path, monkeypatch):
    import mdcvkit._io as io

    monkeypatch.setattr(io.os, "access", lambda path, mode: str(path) != str(tmp_path))  # as for a non-root user
    with pytest.raises(PermissionError, match=r"cannot write '.*cv.pt': the folder .* is not writable"), \
            atomic_path(tmp_path / "cv.pt"):
        pass
    assert not list(tmp_path.iterdir())


@pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*:DeprecationWarning")
def test_torchscript_cv_takes_float64_and_refuses_nan_and_integers(tmp_path, saved_cv):
    cv = mk.AutoencoderCV.load(saved_cv)
    module = torch.jit.load(str(cv.to_torchscript(tmp_path / "cv.ts")))
    x = torch.randn(3, 10, 3) * 3
    torch.testing.assert_close(module(x.double()), module(x), rtol=0, atol=0)  # cast to the exported float32
    with pytest.raises(Exception, match="input 0 of this TorchScript CV holds NaN or infinite values"):
        module(torch.full((1, 10, 3), float("nan")))
    with pytest.raises(Exception, match="input 0 of this TorchScript CV is not floating-point"):
        module(torch.zeros(1, 10, 3, dtype=torch.int64))
