"""mdcvkit: collective variables learned with autoencoders from MD trajectories.

Learn a CV from the frames of a trajectory in the style of MDAnalysis,
use it to bias new simulations in OpenMM, validate it with Markov state
models (deeptime), and generate new structures from the decoder.

>>> import mdcvkit as mk
>>> u = mk.datasets.alanine_dipeptide()
>>> cv = mk.AutoencoderCV(u.select_atoms("not name H*"), n_cv=2, seed=0).run()
>>> cv.results.cv  # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from . import (
    biasing,
    datasets,
    ensembles,
    export,
    features,
    frames,
    metrics,
    models,
    msm,
    physics,
    plot,
    repair,
    systems,
    training,
    uncertainty,
)
from .analysis import AutoencoderCV, CollectiveVariable
from .repair import BondGeometryRepair

try:
    __version__ = version("mdcvkit")
except PackageNotFoundError:  # running from a checkout that was not installed
    __version__ = "0+unknown"

__all__ = [
    "AutoencoderCV",
    "CollectiveVariable",
    "BondGeometryRepair",
    "biasing",
    "datasets",
    "export",
    "ensembles",
    "features",
    "frames",
    "metrics",
    "models",
    "msm",
    "physics",
    "plot",
    "repair",
    "systems",
    "training",
    "uncertainty",
    "__version__",
]
