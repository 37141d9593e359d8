"""Pieces of the FEBILAE loop that hold no loop state: seeds, frames, free energies, and the state file.

Private: :class:`~mdcvkit.biasing.IterativeCVLearning` is the public face.
"""

import hashlib

import MDAnalysis as mda
import numpy as np
import openmm
import torch
import xarray as xr
from MDAnalysis.coordinates.memory import MemoryReader

from .._checks import openmm_seed
from .._io import atomic_path, load_torch
from .._params import check_fingerprint, data_digest
from ..export.openmm import NM_TO_ANGSTROM, module_dtype

#: version of the state-file layout (7: fingerprint of every setting; CVs are CollectiveVariables; 8: the sampler)
STATE_VERSION = 8


def iteration_seed(seed, i):
    """Seed of iteration ``i`` of the loop seeded ``seed``: independent streams for every (seed, i)."""
    return int(np.random.SeedSequence([seed, i]).generate_state(1)[0])


def cv_values(cv, positions):
    """``cv`` of positions (Å) as float64 numpy, without gradients."""
    with torch.no_grad():
        return cv(torch.as_tensor(positions, dtype=torch.float32)).double().numpy()


def memory_universe(positions, names):
    """An in-memory Universe of ``positions`` (n_frames, n_atoms, 3) in Å, atoms named ``names``."""
    universe = mda.Universe.empty(len(names), trajectory=False)
    for attribute, values in (("name", names), ("resname", ["CV"]), ("resid", [1])):  # one residue
        universe.add_TopologyAttr(attribute, values)
    universe.load_new(np.asarray(positions, dtype=np.float32), format=MemoryReader)
    return universe


def sample_unbiased(system, integrator, positions, temperature, particles, steps, every, seed):
    """Positions (Å) of ``particles`` every ``every`` steps of an unbiased run, and the last positions (nm)."""
    platform = "Reference" if system.getNumParticles() <= 200 else "CPU"
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(temperature, openmm_seed(seed))
    frames = []
    for _ in range(steps // every):
        context.getIntegrator().step(every)
        last = context.getState(getPositions=True).getPositions(asNumpy=True)._value
        frames.append(last[particles] * NM_TO_ANGSTROM)
    return np.asarray(frames), last


def toy_region(toy, n_particles, particles):
    """Positions (Å) of ``particles`` on a mesh over the toy's bounds where its potential is below 15 kT."""
    axes = [np.linspace(lo, hi, 101) for lo, hi in toy.bounds]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    energy = toy.potential(mesh)
    keep = mesh[toy.beta * (energy - energy.min()) < 15]
    positions = np.zeros((len(keep), n_particles, 3))
    positions[:, 0, : keep.shape[1]] = keep * NM_TO_ANGSTROM
    return positions[:, particles]


def reference_values(reference, positions):
    """A reference CV on positions (Å) as float64 numpy: a module in float64 where it takes it, else its dtype."""
    if not isinstance(reference, torch.nn.Module):
        return np.asarray(reference(positions), dtype=float)
    x = torch.as_tensor(positions, dtype=torch.float64)
    with torch.no_grad():
        try:
            return reference(x).double().numpy()
        except RuntimeError:  # float32 weights
            return reference(x.to(module_dtype(reference))).double().numpy()


def iterations_dataset(records, criterion, n_cv):
    """``results.iterations``: the records of the iterations as an xarray Dataset over ``iteration``."""
    data = {
        key: ("iteration", np.array([r[key] for r in records], dtype=float), {"long_name": name, "units": units})
        for key, name, units in (
            ("regscore", "regscore against the previous CV", "1"),
            ("knn_regscore", "kNN regscore against the previous CV", "1"),
            ("threshold", f"threshold of the {criterion} criterion", "1"),
            ("reference_score", "regscore of the reference against the CV", "1"),
            ("n_frames", "frames", "1"),
            ("ess", "effective sample size of the training weights", "frames"),
        )
    }  # fmt: skip
    bins = [f"bin{d}" for d in range(n_cv)]
    data["pmf"] = (("iteration", *bins), np.stack([r["pmf"] for r in records]),
                   {"long_name": "free energy along the iteration's CV", "units": "kJ/mol"})  # fmt: skip
    coords = {"iteration": np.arange(len(records))}
    for d, b in enumerate(bins):
        coords[f"xi{d}" if n_cv > 1 else "xi"] = (("iteration", b), np.stack([r["grid"][d] for r in records]),
                                                   {"long_name": "CV", "units": "CV spread"})  # fmt: skip
    return xr.Dataset(data, coords=coords, attrs={"long_name": "FEBILAE iterations"})


def text_digest(text):
    """SHA-256 of a string (an OpenMM XML serialisation)."""
    return hashlib.sha256(text.encode()).hexdigest()


def openmm_fingerprint(system, positions, temperature, integrator):
    """What the simulations of a loop depend on: the System (XML), start, temperature and integrator."""
    if integrator is not None and not isinstance(integrator, str):
        integrator = openmm.XmlSerializer.clone(integrator)
        integrator.setRandomNumberSeed(0)  # each run sets its own
        integrator = text_digest(openmm.XmlSerializer.serialize(integrator))
    return {"n_particles": system.getNumParticles(), "forces": [type(f).__name__ for f in system.getForces()],
            "xml": text_digest(openmm.XmlSerializer.serialize(system)), "positions": data_digest(positions),
            "temperature": float(temperature), "integrator": integrator}  # fmt: skip


def module_fingerprint(module):
    """Class, settings and tensor digest of a module (a featurizer or a reference CV), or a function's name."""
    if not isinstance(module, torch.nn.Module):
        return getattr(module, "__qualname__", type(module).__name__)
    config = module.get_config() if hasattr(module, "get_config") else {}
    return {"class": type(module).__name__, **config, "tensors": data_digest(*module.state_dict().values())}


def save_state(path, state):
    """Write the loop's state to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path, fingerprint, kind="IterativeCVLearning", version=STATE_VERSION):
    """The state in ``path``, checked: a ``kind`` loop's state of layout ``version``, written for ``fingerprint``.

    A state names its loop in ``state["kind"]`` (``"mdcvkit.<kind>"``); IterativeCVLearning's states
    predate the key and go without it.
    """
    what = f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind} state"
    state = load_torch(path, f"{what} file", "state_file", weights_only=False)
    written_by = state.get("kind", "mdcvkit.IterativeCVLearning") if isinstance(state, dict) else None
    if written_by != f"mdcvkit.{kind}" or "records" not in state:
        raise ValueError(f"state_file={str(path)!r} is not {what}; pass another path or delete it")
    if state.get("version") != version:
        raise ValueError(f"state_file={str(path)!r} has layout {state.get('version')!r}, written by another mdcvkit "
                         f"version; this one reads layout {version}: delete it to start afresh, or pass "
                         f"another path")  # fmt: skip
    check_fingerprint(state["fingerprint"], fingerprint, path, "state_file")
    return state
