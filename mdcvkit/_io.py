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
        raise FileNotFoundError(f"cannot write '{path}': the folder '{path.parent}' does not exist; create it first "
                                f"(Path('{path.parent}').mkdir(parents=True)) or write into an existing folder")
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def trace_torchscript(module, example):
    """``torch.jit.trace(module, example)`` without torch's deprecation warning for TorchScript.

    torch >= 2.10 marks TorchScript deprecated, but PLUMED's PYTORCH_MODEL and OpenMM-Torch load
    nothing else. The trace is not checked against a second run (``check_trace=False``).

    Parameters
    ----------
    module : torch.nn.Module
        What to trace; its control flow must not depend on the values of its inputs.
    example : torch.Tensor or tuple of torch.Tensor
        Inputs of the shapes and dtype the traced module will receive (units as ``module`` takes
        them).

    Returns
    -------
    torch.jit.ScriptModule
        The traced module, ready for ``save``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        return torch.jit.trace(module, example, check_trace=False)
