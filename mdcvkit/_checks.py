"""Checks of arguments shared across the package: integers, seeds, numbers, frame slices and selections.

Each check raises ValueError naming the argument, its value and a valid example, so that bad input
fails at the call that received it rather than deep inside NumPy, torch or OpenMM. Nothing here is
public API.
"""

import math
import numbers

__all__ = ["MAX_SEED", "is_int", "check_int", "check_slice", "check_frames", "check_seed", "openmm_seed",
           "check_number", "select_atoms"]

MAX_SEED = 2**32 - 1  # the largest seed numpy.random.default_rng and torch.manual_seed share


def is_int(value):
    """True for Python and NumPy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value, name, minimum=1, fix=""):
    """Return ``value`` as int, or raise ValueError if it is not an integer ``>= minimum``.

    Parameters
    ----------
    value : object
        The argument as passed.
    name : str
        Its name in the caller's signature.
    minimum : int, default 1
        Smallest value accepted.
    fix : str, optional
        What to do instead; default ``"pass e.g. {name}={max(minimum, 1)}"``.

    Returns
    -------
    int
    """
    if not is_int(value) or value < minimum:
        fix = fix or f"pass e.g. {name}={max(minimum, 1)}"
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}; {fix}")
    return int(value)


def check_slice(start, stop, step):
    """Raise ValueError unless ``start`` and ``stop`` are frame indices or None and ``step`` a positive integer or None.

    Parameters
    ----------
    start, stop : int or None
        Frame indices, as in a Python slice (negative counts from the end).
    step : int or None
        Read every ``step``-th frame.
    """
    for name, value in (("start", start), ("stop", stop)):
        if value is not None and not is_int(value):
            raise ValueError(f"{name}={value!r} must be a frame index (an integer; negative counts from the end) "
                             "or None")
    if step is not None:
        check_int(step, "step", fix="pass e.g. step=4 to read every fourth frame")


def check_frames(frames, n_frames):
    """Raise ValueError unless ``frames`` selects frames of a trajectory of ``n_frames`` frames.

    Parameters
    ----------
    frames : array_like of int or bool
        Frame indices (negative count from the end) or a boolean mask of length ``n_frames``.
    n_frames : int
        Frames of the trajectory.
    """
    import numpy as np

    try:
        values = np.asarray(frames)
    except (TypeError, ValueError) as err:
        raise ValueError(f"frames must be a sequence of frame indices or a boolean mask, not "
                         f"{type(frames).__name__}") from err
    if values.ndim != 1:
        raise ValueError(f"frames has shape {values.shape}; pass a 1-D sequence of frame indices, e.g. "
                         "frames=[0, 10, 20]")
    if values.dtype == bool:
        if len(values) != n_frames:
            raise ValueError(f"frames is a boolean mask of length {len(values)}, but the trajectory has {n_frames} "
                             "frames; pass one value per frame")
        return
    if len(values) and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"frames={frames!r} must hold integer frame indices (or booleans), not {values.dtype}")
    bad = values[(values >= n_frames) | (values < -n_frames)]
    if len(bad):
        raise ValueError(f"frames holds {bad[0]}, out of range for a trajectory of {n_frames} frames "
                         f"(valid: {-n_frames} to {n_frames - 1})")


def select_atoms(atoms, select, name="select"):
    """``atoms.select_atoms(select)``, with a malformed selection reported as ValueError naming ``name``.

    Parameters
    ----------
    atoms : MDAnalysis.Universe or MDAnalysis.core.groups.AtomGroup
        Where to select.
    select : str
        MDAnalysis selection string.
    name : str, default "select"
        The argument (or command-line option) that holds ``select``.

    Returns
    -------
    MDAnalysis.core.groups.AtomGroup
        Possibly empty: what an empty selection means is the caller's to say.
    """
    from MDAnalysis.exceptions import SelectionError

    if not isinstance(select, str):
        raise TypeError(f"{name}={select!r} must be an MDAnalysis selection string, e.g. 'not name H*'")
    try:
        return atoms.select_atoms(select)
    except SelectionError as err:
        raise ValueError(f"{name}={select!r} is not an MDAnalysis selection ({err}); e.g. 'not name H*' or "
                         "'backbone'") from err
    except AttributeError as err:  # a keyword on an attribute the topology lacks (NoDataError, or 'Topology' …)
        raise ValueError(f"{name}={select!r} needs an atom attribute this topology does not have ({err}); select "
                         "by index instead, e.g. 'index 0:9', or 'all'") from err


def check_seed(seed):
    """Return ``seed`` as int, or raise ValueError unless it is an integer in [0, 2**32 - 1].

    Parameters
    ----------
    seed : object
        Seed of NumPy's and torch's random generators.

    Returns
    -------
    int
    """
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed!r} must be an integer between 0 and 2**32 - 1; pass e.g. seed=0")
    return int(seed)


def openmm_seed(seed):
    """Map any integer seed onto OpenMM's positive int32 seeds (0 means a random seed there).

    Parameters
    ----------
    seed : int
        Any integer; distinct seeds below 2**31 - 2 map to distinct OpenMM seeds.

    Returns
    -------
    int
        In [1, 2**31 - 2].
    """
    if not is_int(seed):
        raise ValueError(f"seed={seed!r} must be an integer; pass e.g. seed=0")
    return int(seed) % 2_147_483_646 + 1


def check_number(name, value, *, minimum=0.0, strict=False, example="1.0"):
    """Return ``value`` as float, or raise ValueError naming the setting, its value and a valid example.

    Parameters
    ----------
    name : str
        The argument's name.
    value : object
        The argument as passed.
    minimum : float, default 0
        Smallest value accepted.
    strict : bool, default False
        Reject ``minimum`` itself.
    example : str, default "1.0"
        A valid value, shown in the message.

    Returns
    -------
    float
    """
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}={value!r} must be a number, e.g. {example}") from err
    if not math.isfinite(number) or number < minimum or (strict and number == minimum):
        bound = ">" if strict else ">="
        raise ValueError(f"{name}={value!r} must be a finite number {bound} {minimum:g}, e.g. {example}")
    return number
