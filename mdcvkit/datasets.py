"""The trajectories shipped with mdcvkit (folder ``data/`` of the repository, ``mdcvkit.data`` when installed).

The data and the script that made them live in ``data/alanine_dipeptide/``;
see its ``make_data.py`` for every setting. Nothing is downloaded.
"""

from dataclasses import dataclass
from importlib.resources import files

import MDAnalysis as mda
import numpy as np

__all__ = ["C7AX_PHI", "C7EQ_PHI", "KINDS", "SimulationSetup", "alanine_dipeptide", "alanine_dipeptide_system",
           "basin_crossings", "c7_basins", "data_path"]

#: Shipped alanine-dipeptide trajectories by kind.
KINDS = {
    "implicit": ["implicit_0.xtc", "implicit_1.xtc", "implicit_2.xtc", "implicit_3.xtc"],
    "vacuum": ["vacuum.xtc"],
}
#: Cores of alanine dipeptide's C7eq and C7ax basins in φ (degrees, open intervals); between them lies the barrier.
C7EQ_PHI = (-150.0, -40.0)
C7AX_PHI = (30.0, 100.0)
#: Every file of the shipped alanine-dipeptide data.
FILES = ["ala2.pdb", "ala2_start.pdb", *KINDS["implicit"], *KINDS["vacuum"], "make_data.py"]


def data_path(name=""):
    """Path of a file (or the folder) of the shipped alanine-dipeptide data.

    Parameters
    ----------
    name : str, optional
        File name inside ``data/alanine_dipeptide``; the folder when empty.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        For a name that is not in ``FILES``.
    FileNotFoundError
        For a shipped file missing from this installation.
    """
    if name and name not in FILES:
        raise ValueError(f"name={name!r} is not a shipped data file; use one of {FILES}")
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
        Positions in Å, times in ps; all 21 covalent bonds in the topology.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not known; use one of {sorted(KINDS)}")
    import openmm.app as app

    topology = str(data_path("ala2.pdb"))
    trajectories = [str(data_path(name)) for name in KINDS[kind]]
    universe = mda.Universe(topology, trajectories, continuous=False)
    # the PDB has CONECT records only for the caps; OpenMM's residue templates give every bond
    bonds = {tuple(sorted((a.index, b.index))) for a, b in app.PDBFile(topology).topology.bonds()}
    universe.add_bonds(sorted(bonds - {tuple(sorted(b)) for b in universe.bonds.indices}))
    return universe


@dataclass(frozen=True)
class SimulationSetup:
    """An OpenMM system ready to simulate, with the settings it was made for.

    Attributes
    ----------
    topology : openmm.app.Topology
    system : openmm.System
        A fresh System; change it freely (e.g. :func:`mdcvkit.biasing.add_cv_bias`).
    positions : numpy.ndarray, shape (n_atoms, 3)
        Start positions in nm.
    temperature : float
        K.
    friction : float
        Langevin friction, 1/ps.
    timestep : float
        ps.
    """

    topology: object
    system: object
    positions: np.ndarray
    temperature: float
    friction: float
    timestep: float

    def integrator(self, seed=1):
        """A ``LangevinMiddleIntegrator`` at this temperature, friction and time step, seeded.

        Parameters
        ----------
        seed : int, default 1
            Random-number seed (OpenMM draws one itself for 0).

        Returns
        -------
        openmm.LangevinMiddleIntegrator
        """
        import openmm

        integrator = openmm.LangevinMiddleIntegrator(self.temperature, self.friction, self.timestep)
        integrator.setRandomNumberSeed(seed)
        return integrator

    def context(self, seed=1, platform="Reference"):
        """An OpenMM Context of the System with :meth:`integrator`, at the start positions.

        Velocities are drawn at the temperature with ``seed``.

        Parameters
        ----------
        seed : int, default 1
            Seed of the integrator and of the velocities.
        platform : str, default "Reference"
            OpenMM platform; Reference is the fastest on a CPU for a molecule this small.

        Returns
        -------
        openmm.Context
        """
        import openmm

        context = openmm.Context(self.system, self.integrator(seed), openmm.Platform.getPlatformByName(platform))
        context.setPositions(self.positions)
        context.setVelocitiesToTemperature(self.temperature, seed)
        return context


def alanine_dipeptide_system(solvent="vacuum", constraints=True):
    """The OpenMM system of the shipped alanine-dipeptide trajectories (see ``make_data.py``).

    AMBER99SB-ILDN, no cutoff, in vacuum or with the OBC implicit solvent
    (``amber99_obc.xml``); with ``constraints``, X–H bonds are constrained and
    hydrogen masses repartitioned to 4 amu for 4 fs Langevin steps, exactly as
    the shipped data were made. The start is where the shipped run of that
    solvent begins: in vacuum its first frame, in the C7eq basin; in implicit
    solvent ``ala2.pdb``.

    Parameters
    ----------
    solvent : {"vacuum", "implicit"}, default "vacuum"
    constraints : bool, default True
        False: no constraints and true hydrogen masses, with a 0.5 fs time step
        (for constant-energy checks).

    Returns
    -------
    SimulationSetup
        Topology, System, start positions (nm), 300 K, friction 1/ps, time step
        (ps).

    Examples
    --------
    >>> setup = mk.datasets.alanine_dipeptide_system("vacuum")              # doctest: +SKIP
    >>> context = setup.context(seed=1)                                     # doctest: +SKIP
    >>> context.getIntegrator().step(1000)  # 4 ps                          # doctest: +SKIP
    """
    import openmm.app as app
    import openmm.unit as unit

    if solvent not in KINDS:
        raise ValueError(f"solvent={solvent!r} is not known; use one of {sorted(KINDS)}")
    pdb = app.PDBFile(str(data_path("ala2.pdb")))
    files = ["amber99sbildn.xml"] + (["amber99_obc.xml"] if solvent == "implicit" else [])
    system = app.ForceField(*files).createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds if constraints else None,
        hydrogenMass=4 * unit.amu if constraints else None,
    )
    if solvent == "vacuum":
        first = mda.Universe(str(data_path("ala2.pdb")), str(data_path(KINDS["vacuum"][0])))
        positions = first.atoms.positions / 10.0  # first frame of the vacuum run, Å -> nm
    else:
        positions = pdb.positions.value_in_unit(unit.nanometer)
    return SimulationSetup(pdb.topology, system, np.asarray(positions, dtype=np.float64), 300.0, 1.0,
                           0.004 if constraints else 0.0005)


def c7_basins(phi):
    """Basin core of each frame of alanine dipeptide from its φ: 0 in C7eq, 1 in C7ax, -1 between.

    Parameters
    ----------
    phi : array_like, shape (n_frames,)
        φ in degrees, in [-180, 180).

    Returns
    -------
    numpy.ndarray of int, shape (n_frames,)
        The cores are :data:`C7EQ_PHI` and :data:`C7AX_PHI`.

    Examples
    --------
    >>> c7_basins([-80.0, 0.0, 60.0])
    array([ 0, -1,  1])
    """
    phi = np.asarray(phi, dtype=float)
    return np.select([(phi > C7EQ_PHI[0]) & (phi < C7EQ_PHI[1]), (phi > C7AX_PHI[0]) & (phi < C7AX_PHI[1])],
                     [0, 1], -1)  # fmt: skip


def basin_crossings(phi):
    """C7eq ↔ C7ax transitions of a φ series, counted between the basin cores (:func:`c7_basins`).

    A visit to the barrier region that returns to the same core is no crossing, so fast recrossings
    of the barrier top do not count.

    Parameters
    ----------
    phi : array_like, shape (n_frames,)
        φ in degrees, consecutive frames of one trajectory.

    Returns
    -------
    int

    Examples
    --------
    >>> basin_crossings([-80.0, 0.0, -70.0, 60.0, 0.0, 50.0, -90.0])
    2
    """
    core = c7_basins(phi)
    return int(np.count_nonzero(np.diff(core[core >= 0])))
