"""The trajectories shipped with mdcvkit (folder ``data/`` of the repository, ``mdcvkit.data`` when installed).

The data and the script that made them live in ``data/alanine_dipeptide/``;
see its ``make_data.py`` for every setting. Nothing is downloaded.
"""

from importlib.resources import files

import MDAnalysis as mda

__all__ = ["KINDS", "alanine_dipeptide", "data_path"]

#: Shipped alanine-dipeptide trajectories by kind.
KINDS = {
    "implicit": ["implicit_0.xtc", "implicit_1.xtc", "implicit_2.xtc", "implicit_3.xtc"],
    "vacuum": ["vacuum.xtc"],
}


def data_path(name=""):
    """Path of a file (or the folder) of the shipped alanine-dipeptide data.

    Parameters
    ----------
    name : str, optional
        File name inside ``data/alanine_dipeptide``; the folder when empty.

    Returns
    -------
    pathlib.Path
    """
    path = files("mdcvkit.data").joinpath("alanine_dipeptide", name)
    if name and not path.is_file():
        raise FileNotFoundError(
            f"shipped data file {name!r} is missing at {path}; re-create it with "
            "python data/alanine_dipeptide/make_data.py"
        )
    return path


def alanine_dipeptide(kind="implicit"):
    """Alanine dipeptide (ACE-ALA-NME, 22 atoms) simulated with OpenMM, as an MDAnalysis Universe.

    Parameters
    ----------
    kind : {"implicit", "vacuum"}, default "implicit"
        ``"implicit"``: four independent 25 ns runs (100 ns in all) in OBC
        implicit solvent, AMBER99SB-ILDN, 300 K, Langevin dynamics with 4 fs
        steps (hydrogen-mass repartitioning), a frame every 1 ps; the
        Universe chains the four files, which stay four trajectories for
        :class:`mdcvkit.AutoencoderCV`. ``"vacuum"``: one 20 ns run in vacuum
        started in C7eq, for biasing.

    Returns
    -------
    MDAnalysis.Universe
        Positions in Å, times in ps.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not known; use one of {sorted(KINDS)}")
    trajectories = [str(data_path(name)) for name in KINDS[kind]]
    return mda.Universe(str(data_path("ala2.pdb")), trajectories, continuous=False)
