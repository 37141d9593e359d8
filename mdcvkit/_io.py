"""Writing files: atomically (a temporary name in the same folder, then a rename), and TorchScript."""

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = ["as_path", "atomic_path", "trace_torchscript"]


def as_path(value, name="path"):
    """``value`` as a :class:`pathlib.Path`.

    Raises
    ------
    TypeError
        When ``value`` is not a ``str`` or path-like object; the message names the argument ``name``.
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}={value!r} must be a file path (str or pathlib.Path), not {type(value).__name__}")
    return Path(value)


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds.

    On an exception the temporary file is removed and ``path`` is left as it was,
    so an interrupted write never leaves a truncated file behind.

    Raises
    ------
    IsADirectoryError
        When ``path`` is an existing folder.
    FileNotFoundError
        When the folder of ``path`` does not exist (it is not created: a typo in a path should not
        leave a new tree of folders behind).
    """
    path = as_path(path)
    if path.is_dir():
        raise IsADirectoryError(f"'{path}' is a folder; pass the path of a file to write in it")
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write '{path}': the folder '{path.parent}' does not exist; create it first "
            f"(Path('{path.parent}').mkdir(parents=True)) or write into an existing folder"
        )
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class _ShapeGuard(torch.nn.Module):
    """A traced module behind a check of its input's shape (a trace bakes the example's shape in)."""

    def __init__(self, traced, shape: list[int], free_first: bool):
        super().__init__()
        self.traced = traced
        self.shape = shape
        self.free_first = free_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_shape(x, self.shape, self.free_first, 0)
        return self.traced(x)


class _BoxShapeGuard(_ShapeGuard):
    """:class:`_ShapeGuard` for modules taking positions and a box."""

    def __init__(self, traced, shape: list[int], box_shape: list[int], free_first: bool):
        super().__init__(traced, shape, free_first)
        self.box_shape = box_shape

    def forward(self, x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        _check_shape(x, self.shape, self.free_first, 0)
        _check_shape(box, self.box_shape, self.free_first, 1)
        return self.traced(x, box)


def _check_shape(x: torch.Tensor, shape: list[int], free_first: bool, position: int):
    sizes = x.shape
    ok = len(sizes) == len(shape)
    for k in range(1 if free_first else 0, len(shape)):  # TorchScript has no all() over a generator
        ok = ok and sizes[k] == shape[k]
    if not ok:
        expected = [str(n) for n in shape]
        if free_first:
            expected[0] = "n_frames"
        raise ValueError(
            "input {} of this TorchScript CV has shape {}, but the CV was exported for ({}); "
            "pass the atoms and layout it was exported with".format(position, list(sizes), ", ".join(expected))
        )


def trace_torchscript(module, example, free_first=True):
    """``torch.jit.trace(module, example)`` behind a shape check, without torch's deprecation warning.

    torch >= 2.10 marks TorchScript deprecated, but PLUMED's PYTORCH_MODEL and OpenMM-Torch load
    nothing else. The trace is not checked against a second run (``check_trace=False``). A trace
    keeps no Python checks and bakes the example's shapes into its indexing, so an input of another
    shape (another atom count, a missing batch axis) can give a wrong number instead of an error:
    the returned module is a scripted wrapper that refuses inputs whose shapes differ from the
    example's (except, with ``free_first``, along the first axis).

    Parameters
    ----------
    module : torch.nn.Module
        What to trace; its control flow must not depend on the values of its inputs.
    example : torch.Tensor or tuple of torch.Tensor
        Inputs of the shapes and dtype the traced module will receive (units as ``module`` takes
        them); one tensor, or positions and box.
    free_first : bool, default True
        Whether the first axis of the inputs (frames) may differ from the example's.

    Returns
    -------
    torch.jit.ScriptModule
        The checked module, ready for ``save``.
    """
    inputs = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if len(inputs) not in (1, 2):
        raise ValueError(f"example holds {len(inputs)} tensors; trace_torchscript takes positions and at most a box")
    shapes = [list(x.shape) for x in inputs]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        traced = torch.jit.trace(module, inputs, check_trace=False)
        guard = (
            _ShapeGuard(traced, shapes[0], free_first)
            if len(inputs) == 1
            else _BoxShapeGuard(traced, shapes[0], shapes[1], free_first)
        )
        return torch.jit.script(guard)
