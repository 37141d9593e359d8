"""The shared argument checks of mdcvkit._checks."""

import MDAnalysis as mda
import numpy as np
import pytest

from mdcvkit._checks import (
    MAX_SEED,
    check_int,
    check_number,
    check_seed,
    check_slice,
    is_int,
    openmm_seed,
    select_atoms,
)


def test_is_int_accepts_numpy_integers_and_rejects_bools_and_floats():
    assert is_int(3) and is_int(np.int64(3)) and is_int(np.uint8(0))
    assert not is_int(True) and not is_int(3.0) and not is_int("3") and not is_int(None)


def test_check_int_returns_python_int_and_names_the_argument():
    value = check_int(np.int32(5), "n_bins", 2)
    assert value == 5 and type(value) is int
    assert check_int(0, "n_bootstrap", 0) == 0
    with pytest.raises(ValueError, match="n_bins=1 must be an integer >= 2; pass e.g. n_bins=2"):
        check_int(1, "n_bins", 2)
    with pytest.raises(ValueError, match="lag=2.5 must be an integer >= 1; pass the lag in frames"):
        check_int(2.5, "lag", fix="pass the lag in frames")
    with pytest.raises(ValueError, match="steps=True must be an integer"):
        check_int(True, "steps")


def test_check_seed_bounds():
    assert check_seed(0) == 0 and check_seed(np.int64(MAX_SEED)) == MAX_SEED
    for bad in (-1, MAX_SEED + 1, 1.0, "0", False):
        with pytest.raises(ValueError, match="must be an integer between 0 and 2\\*\\*32 - 1"):
            check_seed(bad)


def test_openmm_seed_is_positive_int32_and_distinct():
    seeds = [openmm_seed(s) for s in (-5, 0, 1, 2, 2**40)]
    assert all(1 <= s <= 2**31 - 2 for s in seeds)
    assert len(set(openmm_seed(s) for s in range(1000))) == 1000  # 0 would mean "random" to OpenMM
    with pytest.raises(ValueError, match="seed='a' must be an integer"):
        openmm_seed("a")


def test_check_number():
    assert check_number("beta", "2.5") == 2.5
    assert check_number("beta", 0.0) == 0.0
    with pytest.raises(ValueError, match=r"beta=0.0 must be a finite number > 0, e.g. 1.0"):
        check_number("beta", 0.0, strict=True)
    with pytest.raises(ValueError, match="beta=nan must be a finite number"):
        check_number("beta", float("nan"))
    with pytest.raises(ValueError, match="beta='x' must be a number"):
        check_number("beta", "x")


def test_check_slice():
    check_slice(None, None, None)
    check_slice(-10, np.int64(5), 2)
    with pytest.raises(ValueError, match="start=1.5 must be a frame index"):
        check_slice(1.5, None, None)
    with pytest.raises(ValueError, match="step=-1 must be an integer >= 1; pass e.g. step=4"):
        check_slice(None, None, -1)


def test_select_atoms_names_the_option():
    u = mda.Universe.empty(3, atom_resindex=[0, 0, 0], trajectory=True)
    u.add_TopologyAttr("name", ["N", "CA", "C"])
    assert select_atoms(u, "name CA").n_atoms == 1
    assert select_atoms(u, "name XYZ").n_atoms == 0  # empty is the caller's to judge
    with pytest.raises(ValueError, match=r"--select='name \(' is not an MDAnalysis selection"):
        select_atoms(u, "name (", "--select")
