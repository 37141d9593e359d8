"""Files: written atomically (a temporary name in the same folder, fsync, then a rename), read with
errors that name the file and what it should have been, and TorchScript."""

import os
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = ["as_path", "atomic_path", "load_torch", "trace_torchscript"]

#: Called with the temporary path after it is written and before it is renamed; tests set it to pause
#: (or kill) a writer in the middle of a save. Not public API.
_before_rename = None


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
    PermissionError
        When the folder is not writable, or ``path`` is a read-only file.
    """
    path = as_path(path)
    if path.is_dir():
        raise IsADirectoryError(f"'{path}' is a folder; pass the path of a file to write in it")
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write '{path}': the folder '{path.parent}' does not exist; create it first "
            f"(Path('{path.parent}').mkdir(parents=True)) or write into an existing folder"
        )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write '{path}': the folder '{path.parent}' is not writable (permission "
                              "denied); write into a folder of yours")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"cannot write '{path}': the file is read-only; make it writable or pick another name")
    # the process id keeps two writers apart; the suffix stays last for writers that add one (savefig, numpy)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    _remove_stale(path)
    try:
        yield tmp
        _fsync(tmp)
        if _before_rename is not None:
            _before_rename(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)  # the rename itself reaches the disk
    finally:
        if tmp.exists():
            tmp.unlink()


def _remove_stale(path):
    """Remove temporary files that killed writers of ``path`` left behind (their process is gone)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp{path.suffix}"):
        pid = stale.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except OSError:  # it exists under another user, or the platform cannot tell: leave the file
            pass


def _fsync(path):
    """Flush a written file (or a folder's entries) to the disk; folders that cannot be opened are skipped."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:  # a folder on a platform without O_RDONLY folders (Windows)
        if Path(path).is_dir():
            return
        raise
    try:
        os.fsync(handle)
    except OSError:  # some file systems refuse fsync on folders
        if not Path(path).is_dir():
            raise
    finally:
        os.close(handle)


def _describe(path):
    """What is at ``path`` when it is not the file expected: a folder, empty, text, or unknown bytes."""
    if path.is_dir():
        return "a folder"
    size = path.stat().st_size
    if size == 0:
        return "an empty file"
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK\x03\x04"):
        return f"a truncated or damaged torch file of {size} bytes"
    try:
        head.decode("utf-8")
        return f"a text file of {size} bytes starting {head[:40].decode('utf-8', 'replace')!r}"
    except UnicodeDecodeError:
        return f"a file of {size} bytes that is not a torch file (it starts {head[:8]!r})"


def load_torch(path, what, name="path", weights_only=True):
    """``torch.load`` of a file written by ``torch.save``, with errors that name the file and what it should be.

    Parameters
    ----------
    path : str or path-like
        The file.
    what : str
        What the file should hold, for the messages (e.g. "a CV saved by AutoencoderCV.save").
    name : str, default "path"
        The argument that gave ``path``.
    weights_only : bool, default True
        Passed to :func:`torch.load`; False unpickles arbitrary objects (only for files this package wrote).

    Returns
    -------
    object
        What the file holds, its tensors on the CPU.

    Raises
    ------
    FileNotFoundError
        When nothing is at ``path``.
    ValueError
        When ``path`` is a folder, empty, text, truncated or another kind of file.
    """
    path = as_path(path, name)
    if not path.exists():
        raise FileNotFoundError(f"{name}={str(path)!r}: no such file; expected {what}; check the path")
    if path.is_dir() or not zipfile.is_zipfile(path):
        raise ValueError(f"{name}={str(path)!r} is {_describe(path)}, not {what}; pass the file that was written "
                         "for it")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises RuntimeError, pickle and zip errors for damaged files
        raise ValueError(f"{name}={str(path)!r} cannot be read as {what} ({type(err).__name__}: {err}); it is "
                         "truncated or damaged: write it again") from err


class _ShapeGuard(torch.nn.Module):
    """A traced module behind a check of its input's shape (a trace bakes the example's shape in) and values.

    Inputs of another floating dtype are cast to the example's (a trace runs in one dtype only);
    NaN or infinite inputs raise instead of giving NaN CVs and forces.
    """

    def __init__(self, traced, shape: list[int], free_first: bool, double: bool = False):
        super().__init__()
        self.traced = traced
        self.shape = shape
        self.free_first = free_first
        self.double = double

    def _cast(self, x: torch.Tensor, position: int) -> torch.Tensor:
        if not x.is_floating_point():
            raise ValueError("input " + str(position) + " of this TorchScript CV is not floating-point (an "
                             "integer or bool tensor); pass positions in Å as float32 or float64")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("input " + str(position) + " of this TorchScript CV holds NaN or infinite values; "
                             "pass finite positions (a simulation that blew up gives them)")
        return x.double() if self.double else x.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_shape(x, self.shape, self.free_first, 0)
        return self.traced(self._cast(x, 0))


class _BoxShapeGuard(_ShapeGuard):
    """:class:`_ShapeGuard` for modules taking positions and a box."""

    def __init__(self, traced, shape: list[int], box_shape: list[int], free_first: bool, double: bool = False):
        super().__init__(traced, shape, free_first, double)
        self.box_shape = box_shape

    def forward(self, x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        _check_shape(x, self.shape, self.free_first, 0)
        _check_shape(box, self.box_shape, self.free_first, 1)
        return self.traced(self._cast(x, 0), self._cast(box, 1))


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
    example's (except, with ``free_first``, along the first axis) and inputs holding NaN or
    infinities, and casts floating inputs to the example's dtype (float32 or float64).

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
    double = inputs[0].dtype == torch.float64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        traced = torch.jit.trace(module, inputs, check_trace=False)
        guard = (
            _ShapeGuard(traced, shapes[0], free_first, double)
            if len(inputs) == 1
            else _BoxShapeGuard(traced, shapes[0], shapes[1], free_first, double)
        )
        return torch.jit.script(guard)
