"""Settings read back from ``__init__`` signatures, and fingerprints of resumable files built from them.

One mechanism (deeptime's ``Estimator.get_params``): :func:`get_params` reads every keyword of a
class's ``__init__`` back from the attribute of the same name, so a setting added to a model or a
trainer reaches its saved files and its fingerprints without a list kept in sync by hand.
:func:`check_fingerprint` compares the fingerprint stored in a file with the current one and names
each setting that differs, with both values. Nothing here is public API.
"""

import hashlib
import inspect

import numpy as np
import torch

__all__ = ["get_params", "plain", "data_digest", "check_fingerprint"]


def _init_parameters(cls):
    """Names of the keywords of ``cls.__init__`` (``self``, ``*args`` and ``**kwargs`` left out)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in parameters
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def get_params(obj, exclude=()):
    """Settings of ``obj``: every keyword of its ``__init__``, read back from the attribute of that name.

    Parameters
    ----------
    obj : object
        An instance whose ``__init__`` stores each keyword under its own name.
    exclude : iterable of str, optional
        Keywords to leave out (e.g. those that do not change a result).

    Returns
    -------
    dict
        ``{name: value}`` in signature order, values as :func:`plain` gives them.

    Raises
    ------
    AttributeError
        When ``obj`` does not store one of its keywords (a bug of the class, not of the caller).
    """
    params = {}
    for name in _init_parameters(type(obj)):
        if name in exclude:
            continue
        if not hasattr(obj, name):
            raise AttributeError(f"{type(obj).__name__} does not store its setting {name!r} under that name; "
                                 "store every __init__ keyword as an attribute of the same name")
        params[name] = plain(getattr(obj, name))
    return params


def plain(value):
    """``value`` as plain Python data (tuples and arrays as lists) so that two settings compare by value."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return repr(value)


def data_digest(*arrays):
    """SHA-256 of the bytes, shapes and dtypes of ``arrays`` (None entries count as absent)."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        values = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        values = np.ascontiguousarray(values)
        digest.update(f"{values.dtype.str}{values.shape}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


_ABSENT = "<absent>"


def _differences(old, new, name=""):
    """``(setting, old, new)`` for each leaf that differs; a dict on one side only differs as a whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            yield from _differences(old.get(key, _ABSENT), new.get(key, _ABSENT), f"{name}.{key}" if name else str(key))
    elif old != new:
        yield name, old, new


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_fingerprint(saved, current, path, name="checkpoint"):
    """Raise ValueError unless the fingerprint stored in ``path`` equals ``current``.

    Parameters
    ----------
    saved, current : dict
        Nested ``{group: {setting: value}}`` fingerprints (plain data), as written and as now.
    path : path-like
        The file, named in the message.
    name : str, default "checkpoint"
        The argument that gave ``path``.

    Raises
    ------
    ValueError
        Naming each setting that differs with its value in the file and now.
    """
    differing = list(_differences(saved, current))
    if not differing:
        return
    lines = "; ".join(f"{key}: {_short(old)} in the file, {_short(new)} now" for key, old, new in differing)
    raise ValueError(
        f"{name}={str(path)!r} was written for other settings and cannot be resumed ({lines}); pass the same "
        f"settings to resume, or delete the file (or pass another {name}) to start afresh"
    )
