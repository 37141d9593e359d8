"""What the benchmark scripts share: the feature matrix they train on and table printing."""

import numpy as np

import mdcvkit as mk
from mdcvkit.features import FeatureCollector, make_featurizer


def load_features(step):
    """Aligned heavy-atom features of every ``step``-th frame of the shipped alanine dipeptide.

    Returns
    -------
    features : numpy.ndarray of float32, shape (n_frames, 30)
    featurizer : mdcvkit.features.AlignedPositions
    lengths : list of int
        Analysed frames of each of the four chained runs (lagged pairs must not cross them).
    """
    u = mk.datasets.alanine_dipeptide()
    heavy = u.select_atoms("not name H*")
    featurizer = make_featurizer("aligned", heavy)
    collector = FeatureCollector(heavy, featurizer).run(step=step)
    starts = np.cumsum([0, *(reader.n_frames for reader in u.trajectory.readers)])
    segment = np.searchsorted(starts, collector.frames, side="right") - 1
    lengths = np.bincount(segment, minlength=len(starts) - 1)
    features = np.ascontiguousarray(collector.results.features, dtype=np.float32)
    return features, featurizer, [int(n) for n in lengths if n > 0]


def print_table(table):
    """Print rows (tuples of cells) as left-aligned columns."""
    widths = [max(len(str(row[k])) for row in table) for k in range(len(table[0]))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
