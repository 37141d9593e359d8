"""Make the alanine-dipeptide trajectories shipped in this folder.

Run from anywhere with ``python data/alanine_dipeptide/make_data.py``; the whole
run takes about 15 minutes on two CPU cores (OpenMM's Reference platform, which
is the fastest one for a 22-atom system on a CPU).

What it makes (all lengths as written by OpenMM's XTC reporter, nm on disk,
read as Å by MDAnalysis):

``ala2.pdb``
    Topology and minimised starting structure (ACE-ALA-NME, 22 atoms).
``implicit_0.xtc`` … ``implicit_3.xtc``
    Four independent 25 ns runs in implicit solvent (AMBER99SB-ILDN with the
    OBC GB model, ``amber99_obc.xml``), 300 K, Langevin middle integrator with
    friction 1/ps, 4 fs time step made possible by hydrogen-mass
    repartitioning (hydrogen mass 4 amu) and constrained X–H bonds; a frame
    every 1 ps, velocities drawn with seeds 1–4 after 100 ps of equilibration.
``vacuum.xtc``
    One 20 ns run in vacuum (same force field without solvent), started in
    the C7eq basin (φ, ψ) = (-83°, 73°), which is reached by a 100 ps run with
    flat-bottomed dihedral restraints that are then removed.

The trajectories are deterministic for a given OpenMM version and platform
(``Reference`` is deterministic; seeds are fixed).
"""

import argparse
import math
import os
from multiprocessing import Pool
from pathlib import Path

import openmm as mm
import openmm.app as app
import openmm.unit as unit

HERE = Path(__file__).resolve().parent
TEMPERATURE = 300 * unit.kelvin
FRICTION = 1 / unit.picosecond
TIMESTEP = 4 * unit.femtosecond
STEPS_PER_FRAME = 250  # 1 ps between frames
EQUILIBRATION_STEPS = 25_000  # 100 ps
# backbone atoms of phi (C-N-CA-C) and psi (N-CA-C-N), 0-based indices in ala2.pdb
PHI_ATOMS = (4, 6, 8, 14)
PSI_ATOMS = (6, 8, 14, 16)


def build_system(solvent):
    """Return topology, system and minimised positions for ``solvent`` 'implicit' or 'vacuum'."""
    pdb = app.PDBFile(str(HERE / "ala2_start.pdb"))
    files = ["amber99sbildn.xml"] + (["amber99_obc.xml"] if solvent == "implicit" else [])
    forcefield = app.ForceField(*files)
    system = forcefield.createSystem(
        pdb.topology,
        nonbondedMethod=app.NoCutoff,
        constraints=app.HBonds,
        hydrogenMass=4 * unit.amu,
    )
    return pdb.topology, system, pdb.positions


def make_simulation(topology, system, seed):
    integrator = mm.LangevinMiddleIntegrator(TEMPERATURE, FRICTION, TIMESTEP)
    integrator.setRandomNumberSeed(seed)
    platform = mm.Platform.getPlatformByName("Reference")
    return app.Simulation(topology, system, integrator, platform)


def restrain_to_c7eq(system):
    """Add flat-bottomed restraints holding (phi, psi) near C7eq; return the force index."""
    force = mm.CustomTorsionForce(
        "0.5*k*max(0, d - width)^2; d = abs(atan2(sin(theta - theta0), cos(theta - theta0)))"
    )
    force.addPerTorsionParameter("theta0")
    force.addGlobalParameter("k", 500.0)  # kJ/mol/rad^2
    force.addGlobalParameter("width", math.radians(20))
    force.addTorsion(*PHI_ATOMS, [math.radians(-83)])
    force.addTorsion(*PSI_ATOMS, [math.radians(73)])
    return system.addForce(force)


def run(job):
    """Run one trajectory; ``job`` is (solvent, index, seed, nanoseconds)."""
    solvent, index, seed, nanoseconds = job
    topology, system, positions = build_system(solvent)
    restraint = restrain_to_c7eq(system) if solvent == "vacuum" else None
    simulation = make_simulation(topology, system, seed)
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(TEMPERATURE, seed)
    simulation.step(EQUILIBRATION_STEPS)
    if restraint is not None:
        simulation.context.setParameter("k", 0.0)
    if solvent == "implicit" and index == 0:
        state = simulation.context.getState(getPositions=True)
        write_atomically(HERE / "ala2.pdb", lambda f: app.PDBFile.writeFile(topology, state.getPositions(), f))
    name = f"{solvent}_{index}.xtc" if solvent == "implicit" else "vacuum.xtc"
    tmp = HERE / f".{name}.tmp.xtc"
    if tmp.exists():
        tmp.unlink()
    simulation.reporters.append(app.XTCReporter(str(tmp), STEPS_PER_FRAME))
    n_frames = int(round(nanoseconds * 1000))
    simulation.step(n_frames * STEPS_PER_FRAME)
    del simulation  # closes the reporter's file
    os.replace(tmp, HERE / name)
    return name


def write_atomically(path, write):
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        write(handle)
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--implicit-ns", type=float, default=25.0, help="length of each implicit-solvent run (ns)")
    parser.add_argument("--n-implicit", type=int, default=4, help="number of implicit-solvent runs")
    parser.add_argument("--vacuum-ns", type=float, default=20.0, help="length of the vacuum run (ns)")
    parser.add_argument("--processes", type=int, default=2, help="runs made in parallel")
    args = parser.parse_args()
    jobs = [("implicit", i, i + 1, args.implicit_ns) for i in range(args.n_implicit)]
    jobs.append(("vacuum", 0, 101, args.vacuum_ns))
    with Pool(args.processes) as pool:
        for name in pool.imap_unordered(run, jobs):
            print("wrote", name, flush=True)


if __name__ == "__main__":
    main()
