import warnings

import pytest
import torch

import mdcvkit as mk
from mdcvkit._io import as_path, atomic_path, trace_torchscript
from mdcvkit.biasing import IterativeCVLearning, to_plumed
from mdcvkit.training import Trainer


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("new")
        assert not target.exists()  # nothing at the final name until the block succeeds
    assert target.read_text() == "new"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_refuses_folders_and_missing_folders(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; pass the path of a file"), atomic_path(tmp_path):
        pass
    missing = tmp_path / "no" / "such" / "cv.pt"
    with pytest.raises(FileNotFoundError, match="the folder .* does not exist; create it first"), \
            atomic_path(missing):
        pass
    assert not (tmp_path / "no").exists()


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # the temporary file is gone


def test_trace_torchscript_is_silent_and_exact():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        traced = trace_torchscript(module, (x,))
    assert isinstance(traced, torch.jit.ScriptModule)
    y = torch.randn(7, 3)
    torch.testing.assert_close(traced(y), module(y), rtol=0, atol=0)


def test_as_path_names_the_argument(tmp_path):
    assert as_path(str(tmp_path)) == tmp_path and as_path(tmp_path / "a", "output") == tmp_path / "a"
    with pytest.raises(TypeError, match=r"output=3 must be a file path \(str or pathlib.Path\), not int"):
        as_path(3, "output")


@pytest.mark.parametrize("call, name", [
    (lambda: mk.AutoencoderCV.load(123), "path=123"),
    (lambda: Trainer(checkpoint=1.5), "checkpoint=1.5"),
    (lambda: IterativeCVLearning(mk.systems.EntropicSwitch(), state_file=["s.pt"]), r"state_file=\['s.pt'\]"),
    (lambda: to_plumed(torch.nn.Identity(), None), "folder=None"),
])  # fmt: skip
def test_paths_that_are_not_paths_are_refused_by_name(call, name):
    with pytest.raises(TypeError, match=f"{name} must be a file path"):
        call()
