"""Progress output for long work: a tqdm bar by default where stderr is a terminal, sparse lines in logs.

Every long-running entry point (training, eABF, OPES, the FEBILAE and committor loops) takes
``verbose``: ``None`` (the default) shows a bar only when stderr is a terminal, ``True`` always
shows it (in a log file one line every :data:`LOG_INTERVAL` seconds, not a line per update), and
``False`` silences it.
"""

import sys

import numpy as np
from tqdm.auto import tqdm

LOG_INTERVAL = 30.0  # s between progress lines where stderr is not a terminal (a log file or a pipe)


def _stderr_is_terminal():
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


def resolve_verbose(verbose, name="verbose"):
    """Whether to show progress: ``verbose`` as a bool, ``None`` meaning "stderr is a terminal".

    Parameters
    ----------
    verbose : bool or None
        ``True``/``False`` forces progress output on or off; ``None`` shows it on a terminal only.
    name : str, default "verbose"
        Argument name used in the error message.

    Returns
    -------
    bool

    Raises
    ------
    TypeError
        If ``verbose`` is neither a bool nor None.
    """
    if verbose is None:
        return _stderr_is_terminal()
    if not isinstance(verbose, bool | np.bool_):
        raise TypeError(f"{name}={verbose!r} must be True, False or None (a progress bar on a terminal only)")
    return bool(verbose)


def progress_bar(iterable=None, *, verbose=None, **kwargs):
    """A tqdm bar that follows :func:`resolve_verbose`; in a log file it updates every :data:`LOG_INTERVAL` s.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over, as for :class:`tqdm.tqdm`.
    verbose : bool or None, default None
        See :func:`resolve_verbose`.
    **kwargs
        Passed to :class:`tqdm.tqdm` (``total``, ``desc``, ``unit``, ``initial``, ...).

    Returns
    -------
    tqdm.tqdm
        Disabled (updates are no-ops) when progress is not shown.
    """
    show = resolve_verbose(verbose)
    if show and not _stderr_is_terminal():
        kwargs.setdefault("mininterval", LOG_INTERVAL)
    return tqdm(iterable, disable=not show, **kwargs)
