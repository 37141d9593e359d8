"""What the benchmark scripts share: the feature matrix they train on, the timing options and table printing."""

import numpy as np
import torch

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


def timing_args(parser, quick):
    """Parse a timing benchmark's command line: its own options plus ``--repeats`` and ``--quick``.

    Torch is pinned to one thread, so that timings of one run compare.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The benchmark's parser, with its own options added.
    quick : dict
        Settings of a smoke run, ``{option name: value}``, that ``--quick`` puts in place.

    Returns
    -------
    argparse.Namespace
        With ``repeats`` (default 3; the median of the repeats is reported).
    """
    parser.add_argument("--repeats", type=int, default=3, help="timings of each figure (default 3)")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run, numbers mean nothing: {quick}")
    args = parser.parse_args()
    if args.quick:
        vars(args).update(quick)
    torch.set_num_threads(1)
    return args
