"""CV cases shared by the exporter tests: every featurizer, under a small random network, on alanine dipeptide."""

from pathlib import Path

import MDAnalysis as mda
import numpy as np
import openmm
import openmm.app as app
import torch

from mdcvkit.analysis import CollectiveVariable
from mdcvkit.features import AlignedPositions, Concatenate, Dihedrals, FramePositions, PairwiseDistances, Positions
from mdcvkit.models import AutoEncoder, VariationalAutoEncoder

DATA = Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide"
PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)
HEAVY = [1, 4, 5, 6, 8, 10, 14, 15, 16, 18]  # system indices of the heavy atoms


def frames(n=6, seed=0):
    """``n`` random frames (Å, float64) of the shipped vacuum trajectory, all 22 atoms."""
    u = mda.Universe(str(DATA / "ala2.pdb"), str(DATA / "vacuum.xtc"))
    picks = np.random.default_rng(seed).choice(len(u.trajectory), n, replace=False)
    return np.array([u.trajectory[int(k)].positions.astype(float) for k in picks])


def vacuum_system():
    pdb = app.PDBFile(str(DATA / "ala2.pdb"))
    return app.ForceField("amber99sbildn.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)


def featurizers(positions):
    """Every featurizer, on the heavy atoms (``HEAVY``); ``positions`` (Å) give the fit reference."""
    heavy = positions[0, HEAVY]
    phi_psi = [[HEAVY.index(a) for a in PHI], [HEAVY.index(a) for a in PSI]]
    n = len(HEAVY)
    return {
        "dihedrals": Dihedrals(n, phi_psi),
        "angles": Dihedrals(n, phi_psi + [[0, 1, 3, 4]], trig=False),
        "distances": PairwiseDistances(n),
        "positions": Positions(n, axes=(0, 2)),
        "frame": FramePositions(n, (3, 4, 6)),
        "aligned": AlignedPositions(heavy, atoms=[0, 2, 4, 6, 8]),
        "concatenate": Concatenate([Dihedrals(n, phi_psi), PairwiseDistances(n, [[0, 9], [2, 7]])]),
    }


def random_cv(featurizer, hidden=(6,), activation="tanh", model="ae", seed=0):
    """A CollectiveVariable with random weights and a non-trivial normalisation (float64)."""
    torch.manual_seed(seed)
    kind = {"ae": AutoEncoder, "vae": VariationalAutoEncoder}[model]
    network = kind(featurizer.n_features, 2, hidden=hidden, activation=activation).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        network.normalization.mean.normal_(0.0, 0.5, generator=generator)
        network.normalization.scale.uniform_(0.5, 2.0, generator=generator)
    return CollectiveVariable(featurizer, network).double()


def torch_values_and_gradients(cv, positions):
    """CV ``(n, n_cv)`` and ``dξ_k/dx`` ``(n, n_cv, n_atoms, 3)`` per Å, by autograd."""
    x = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
    out = cv(x)
    grads = [torch.autograd.grad(out[:, k].sum(), x, retain_graph=True)[0] for k in range(out.shape[1])]
    return out.detach().numpy(), torch.stack(grads, 1).numpy()


def openmm_values_and_gradients(forces_by_component, n_particles, positions_nm):
    """Energies (the CV) and minus the forces (per nm) of one force per CV component, per frame."""
    system = openmm.System()
    for _ in range(n_particles):
        system.addParticle(1.0)
    for k, force in enumerate(forces_by_component):
        force.setForceGroup(k)
        system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    values, gradients = [], []
    for frame in positions_nm:
        context.setPositions(frame)
        states = [context.getState(getEnergy=True, getForces=True, groups={k}) for k in range(len(forces_by_component))]
        values.append([s.getPotentialEnergy()._value for s in states])
        gradients.append([-s.getForces(asNumpy=True)._value for s in states])
    return np.array(values), np.array(gradients)
