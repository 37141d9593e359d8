"""Fixtures shared by several test modules: the shipped data and short fits of every model."""

import pytest

import mdcvkit as mk
from mdcvkit.models import MODELS

#: Settings of the short fits: a few epochs of a small network.
SHORT = dict(max_epochs=3, hidden=(16,), seed=0)
STEP = 100  # 1,000 of the 100,000 frames


@pytest.fixture(scope="module")
def ala2():
    return mk.datasets.alanine_dipeptide()


@pytest.fixture(scope="module")
def heavy(ala2):
    return ala2.select_atoms("not name H*")


@pytest.fixture(scope="module", params=sorted(MODELS))
def short_fit(request, heavy):
    name = request.param
    return mk.AutoencoderCV(heavy, n_cv=2, model=name, lag=1 if name == "tae" else 0, **SHORT).run(step=STEP)
