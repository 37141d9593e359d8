"""Input checks of :mod:`mdcvkit.msm` and CV time series turned into one float array per trajectory.

Private helpers shared by :mod:`~mdcvkit.msm.timescales`, :mod:`~mdcvkit.msm.ck` and
:mod:`~mdcvkit.msm.validation`; nothing here is public API.
"""

import numbers
import warnings

import numpy as np
import xarray as xr

__all__ = [
    "_check_dt", "_check_conf", "_check_lags",
    "_as_frames_by_cv", "_split_dataarray", "_trajectories",
]


# ---------------------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------------------
def _check_dt(dt):
    if dt is None:
        return None
    if not isinstance(dt, numbers.Real) or isinstance(dt, bool) or not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt={dt!r} must be a positive number of ps per frame, or None to read it from the "
                         "'time' coordinate of a DataArray")
    return float(dt)


def _check_conf(confidence, conf=None, stacklevel=3):
    """``confidence`` as a float in (0, 1); ``conf``, its former name, is taken with a DeprecationWarning."""
    if conf is not None:
        warnings.warn("conf= is deprecated; pass confidence= (the name compare_ensembles and Committor.rate use)",
                      DeprecationWarning, stacklevel=stacklevel)
        confidence = conf
    if not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} must be a probability between 0 and 1 (exclusive); "
                         "pass e.g. confidence=0.95")
    return float(confidence)


def _check_lags(lags, n_shortest, which_shortest, name="lags"):
    """Return ``lags`` as a sorted array of unique positive integers below the shortest trajectory."""
    values = np.atleast_1d(np.asarray(lags))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name}={lags!r} must be a positive integer or a non-empty 1-D sequence of them")
    if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name}={lags!r} must be positive integers (numbers of frames), not {values.dtype} "
                         "values; to give lag times t in ps pass np.round(t / dt).astype(int)")
    if np.any(values <= 0):
        raise ValueError(f"{name}={lags!r} must be positive integers (numbers of frames); "
                         f"got {values[values <= 0].tolist()}")
    longest = int(values.max())
    if longest >= n_shortest:
        raise ValueError(f"{name}={lags!r}: lag {longest} is not smaller than the shortest trajectory "
                         f"(trajectory {which_shortest}, {n_shortest} frames); pass lags below {n_shortest} "
                         "or leave out the short trajectory")
    return np.unique(values).astype(int)


# ---------------------------------------------------------------------------------------------------------
# CV time series -> list of (n_frames, n_cv) float arrays, one per trajectory
# ---------------------------------------------------------------------------------------------------------
def _as_frames_by_cv(values, label):
    values = np.asarray(values)
    if values.dtype == object or not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise TypeError(f"{label} has dtype {values.dtype}; pass numbers (a CV time series)")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"{label} has shape {values.shape}; a CV time series must be (n_frames,) or "
                         "(n_frames, n_cv); pass several trajectories as a list")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{label} has shape {values.shape} and holds no data")
    values = np.array(values, dtype=np.float64, order="C")  # a copy: the caller's data are never changed
    bad = ~np.isfinite(values)
    if bad.any():
        frame = int(np.argwhere(bad)[0, 0])
        raise ValueError(f"{label} holds {int(bad.sum())} NaN or infinite values (first at frame {frame}); "
                         "remove those frames, or split the trajectory at them and pass a list")
    return values


def _split_dataarray(data, label):
    """Split a DataArray by its ``trajectory`` coordinate; return arrays, their labels and the inferred dt."""
    frame_dim = "frame" if "frame" in data.dims else data.dims[0]
    if data.ndim == 2:
        data = data.transpose(frame_dim, ...)
    elif data.ndim != 1:
        raise ValueError(f"{label} has dims {data.dims}; pass a DataArray with dims ('frame', 'cv') "
                         "or ('frame',)")
    if "trajectory" in data.coords:
        traj = np.asarray(data.coords["trajectory"].values)
        if traj.shape != (data.sizes[frame_dim],):
            raise ValueError(f"the 'trajectory' coordinate of {label} has shape {traj.shape}; it must run "
                             f"along {frame_dim!r} and give one label per frame")
        _, first = np.unique(traj, return_index=True)
        keys = traj[np.sort(first)].tolist()  # in order of first appearance, as Python scalars
        groups = [(np.flatnonzero(traj == key), f"{label} (trajectory={key!r})") for key in keys]
    else:
        groups = [(np.arange(data.sizes[frame_dim]), label)]
    time = np.asarray(data.coords["time"].values, dtype=float) if "time" in data.coords else None
    arrays, labels, steps = [], [], []
    for index, group_label in groups:
        arrays.append(_as_frames_by_cv(data.values[index], group_label))
        labels.append(group_label)
        if time is not None and len(index) > 1:
            step = np.diff(time[index])
            if np.any(step <= 0):
                before, frame = index[np.argmax(step <= 0)], index[np.argmax(step <= 0) + 1]
                raise ValueError(f"the 'time' coordinate of {group_label} does not increase at frame "
                                 f"{frame} (time {time[before]:g} -> {time[frame]:g} ps): it seems to join "
                                 "several trajectories; give it a 'trajectory' coordinate or pass a list "
                                 "with one array per trajectory")
            steps.append(step)
    dt = None
    if steps:
        step = np.concatenate(steps)
        dt = float(np.median(step))
        if not np.allclose(step, dt, rtol=1e-3, atol=0):
            dt = np.nan  # uneven spacing: the caller must pass dt
    return arrays, labels, dt


def _trajectories(trajs, dt):
    """Return (list of float64 arrays (n_frames_i, n_cv), their labels, dt in ps per frame or None)."""
    if isinstance(trajs, (list, tuple)):
        if len(trajs) == 0:
            raise ValueError("trajs=[] holds no trajectory; pass a CV time series or a list of them")
        if all(isinstance(item, numbers.Number) for item in trajs):
            items = [np.asarray(trajs)]  # a bare list of numbers is one 1-D trajectory
        else:
            items = list(trajs)
    else:
        items = [trajs]
    arrays, labels, inferred = [], [], []
    for i, item in enumerate(items):
        label = "trajs" if len(items) == 1 else f"trajs[{i}]"
        if isinstance(item, xr.DataArray):
            item_arrays, item_labels, item_dt = _split_dataarray(item, label)
            arrays += item_arrays
            labels += item_labels
            if item_dt is not None:
                inferred.append(item_dt)
        elif isinstance(item, (np.ndarray, list, tuple)) or hasattr(item, "__array__"):
            arrays.append(_as_frames_by_cv(item, label))
            labels.append(label)
        else:
            raise TypeError(f"{label} is a {type(item).__name__}; pass an xarray.DataArray (results.cv), "
                            "a numpy array (n_frames,) or (n_frames, n_cv), or a list of those")
    n_cv = {a.shape[1] for a in arrays}
    if len(n_cv) > 1:
        raise ValueError(f"the trajectories have different numbers of CVs {sorted(n_cv)}; pass trajectories "
                         "of the same CV")
    dt = _check_dt(dt)
    if dt is None and inferred:
        if any(np.isnan(v) for v in inferred) or not np.allclose(inferred, inferred[0], rtol=1e-3, atol=0):
            raise ValueError("dt=None but the 'time' coordinates are not evenly spaced (or differ between "
                             "trajectories); pass dt, the time between consecutive frames in ps")
        dt = float(inferred[0])
    return arrays, labels, dt
