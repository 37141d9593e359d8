import warnings

import pytest
import torch

import mdcvkit as mk
from mdcvkit._io import as_path, atomic_path, trace_torchscript
from mdcvkit.biasing import IterativeCVLearning
from mdcvkit.export import to_plumed
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
    with pytest.raises(FileNotFoundError, match="the folder .* does not exist; create it first"), atomic_path(missing):
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


class _FirstColumns(torch.nn.Module):
    def forward(self, x):
        return x[:, :3] * 2.0


class _WithBox(torch.nn.Module):
    def forward(self, x, box):
        return x.sum(-1) + box.sum((-1, -2))


@pytest.mark.parametrize("free_first, bad", [(True, (5, 4)), (True, (3,)), (False, (7, 3))])
def test_trace_torchscript_refuses_inputs_of_another_shape(free_first, bad):
    # a trace bakes the example's shape into its indexing: without the check, x[:, :3] of a (5, 4)
    # input would give a number from the wrong columns
    traced = trace_torchscript(_FirstColumns(), torch.randn(5, 3), free_first=free_first)
    expected = r"\(n_frames, 3\)" if free_first else r"\(5, 3\)"
    with pytest.raises(
        torch.jit.Error,
        match=rf"input 0 of this TorchScript CV has shape \[{', '.join(map(str, bad))}\], "
        rf"but the CV was exported for {expected}",
    ):
        traced(torch.randn(*bad))
    if free_first:
        assert traced(torch.randn(9, 3)).shape == (9, 3)


def test_trace_torchscript_checks_the_box_too():
    traced = trace_torchscript(_WithBox(), (torch.randn(2, 4), torch.eye(3).expand(2, 3, 3)))
    torch.testing.assert_close(traced(torch.ones(3, 4), torch.eye(3).expand(3, 3, 3)), torch.full((3,), 7.0))
    with pytest.raises(torch.jit.Error, match=r"input 1 of this TorchScript CV has shape \[3, 3\]"):
        traced(torch.ones(3, 4), torch.eye(3))


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
