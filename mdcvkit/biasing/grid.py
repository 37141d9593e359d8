"""Regular grids over CV space: bins, centres, periodicity (in the CV's own units)."""

import numpy as np

__all__ = ["Grid"]


class Grid:
    """A regular grid of bins over one or two CV components.

    Parameters
    ----------
    lower, upper : float or sequence of float
        Boundaries per CV component, in the CV's units.
    n_bins : int or sequence of int
        Number of bins per component.
    periodic : bool or sequence of bool, default False
        Whether a component is periodic with period ``upper - lower`` (e.g. a dihedral on
        ``(-π, π)``).
    names : sequence of str, optional
        Names of the components (dims of the results); default ``cv0``, ``cv1``.

    Examples
    --------
    >>> Grid(-2.0, 2.0, 80)                       # doctest: +SKIP
    >>> Grid([-2, -1.5], [2, 2.5], [40, 40])      # doctest: +SKIP
    """

    def __init__(self, lower, upper, n_bins, periodic=False, names=None):
        lower = np.atleast_1d(np.asarray(lower, dtype=float))
        upper = np.atleast_1d(np.asarray(upper, dtype=float))
        n_dim = lower.size
        n_bins = np.broadcast_to(np.atleast_1d(np.asarray(n_bins)), (n_dim,)).copy()
        periodic = np.broadcast_to(np.atleast_1d(np.asarray(periodic, dtype=bool)), (n_dim,)).copy()
        if upper.shape != lower.shape or lower.ndim != 1 or n_dim not in (1, 2):
            raise ValueError(
                f"lower={lower.tolist()} and upper={upper.tolist()} must give one boundary per CV component, "
                f"for 1 or 2 components"
            )
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper)) and np.all(upper > lower)):
            raise ValueError(
                f"grid boundaries lower={lower.tolist()}, upper={upper.tolist()} "
                f"must be finite with upper > lower"
            )
        if not np.all(np.equal(np.mod(n_bins, 1), 0)) or np.any(n_bins < 3):
            raise ValueError(f"n_bins={n_bins.tolist()} must be integers >= 3; pass e.g. n_bins=50")
        self.lower, self.upper = lower, upper
        self.n_bins = n_bins.astype(int)
        self.periodic = periodic
        self.names = [f"cv{k}" for k in range(n_dim)] if names is None else [str(n) for n in names]
        if len(self.names) != n_dim:
            raise ValueError(f"names={names!r} must have one entry per CV component ({n_dim})")

    @classmethod
    def create(cls, grid, names=None):
        """A Grid from a Grid, a ``(lower, upper, n_bins)`` tuple or a list of such tuples (one per CV).

        Parameters
        ----------
        grid : Grid, tuple or list of tuple
        names : sequence of str, optional
            Component names used when ``grid`` is not already a Grid.

        Returns
        -------
        Grid
        """
        if isinstance(grid, Grid):
            return grid
        try:
            if len(grid) == 3 and np.ndim(grid[0]) == 0:
                lower, upper, n_bins = grid
                return cls(lower, upper, n_bins, names=names)
            lower, upper, n_bins = zip(*grid, strict=True)
            return cls(lower, upper, n_bins, names=names)
        except (TypeError, ValueError) as err:
            if isinstance(err, ValueError) and "must" in str(err):
                raise
            raise ValueError(
                f"grid={grid!r} is not a grid; pass mdcvkit.biasing.Grid(lower, upper, n_bins), a tuple "
                f"(lower, upper, n_bins) or one such tuple per CV component"
            ) from err

    @property
    def n_dim(self):
        """Number of CV components."""
        return self.lower.size

    @property
    def shape(self):
        """Bins per component, as a tuple."""
        return tuple(int(n) for n in self.n_bins)

    @property
    def width(self):
        """Bin widths per component (CV units)."""
        return (self.upper - self.lower) / self.n_bins

    @property
    def period(self):
        """``upper - lower`` per component (used where periodic)."""
        return self.upper - self.lower

    def centers(self, dim):
        """Bin centres along component ``dim`` (CV units)."""
        return self.lower[dim] + (np.arange(self.n_bins[dim]) + 0.5) * self.width[dim]

    def edges(self, dim):
        """Bin edges along component ``dim``, ``n_bins + 1`` values (CV units)."""
        return np.linspace(self.lower[dim], self.upper[dim], self.n_bins[dim] + 1)

    def wrap(self, delta):
        """Minimum-image difference along periodic components; ``delta`` of shape (..., n_dim)."""
        delta = np.array(delta, dtype=float)
        for d in range(self.n_dim):
            if self.periodic[d]:
                delta[..., d] -= self.period[d] * np.round(delta[..., d] / self.period[d])
        return delta

    def index(self, values):
        """Flat bin index of each point, -1 outside the grid.

        Parameters
        ----------
        values : array_like, shape (n_samples, n_dim)

        Returns
        -------
        numpy.ndarray of int, shape (n_samples,)
        """
        values = np.asarray(values, dtype=float).reshape(-1, self.n_dim)
        rel = (values - self.lower) / self.width
        for d in range(self.n_dim):
            if self.periodic[d]:
                rel[:, d] = np.mod(rel[:, d], self.n_bins[d])
        idx = np.floor(rel).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < self.n_bins) & np.isfinite(rel), axis=1)
        flat = np.full(len(values), -1, dtype=np.int64)
        if np.any(inside):
            flat[inside] = np.ravel_multi_index(tuple(idx[inside].T), self.shape)
        return flat

    def center_of(self, flat):
        """Bin centres ``(n, n_dim)`` of flat bin indices."""
        idx = np.stack(np.unravel_index(flat, self.shape), axis=-1)
        return self.lower + (idx + 0.5) * self.width

    def contains(self, values):
        """Whether each point ``(n, n_dim)`` lies on the grid (periodic components always do)."""
        return self.index(values) >= 0

    def to_dict(self):
        """Plain description, for saving and comparing."""
        return {
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
            "n_bins": self.n_bins.tolist(),
            "periodic": self.periodic.tolist(),
        }

    def __eq__(self, other):
        return isinstance(other, Grid) and self.to_dict() == other.to_dict()

    def __repr__(self):
        d = self.to_dict()
        return f"Grid(lower={d['lower']}, upper={d['upper']}, n_bins={d['n_bins']}, periodic={d['periodic']})"
