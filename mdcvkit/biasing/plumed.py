"""Export a CV for PLUMED (``PYTORCH_MODEL``) and for openmm-torch (``TorchForce``).

PLUMED computes the descriptors itself (``DISTANCE``, ``TORSION``, ``POSITION``)
and feeds them, as a float32 tensor of shape ``(1, n_descriptors)``, to the
TorchScript model written here, which returns one column per CV component
(PLUMED names them ``<label>.node-0``, ``<label>.node-1``, ...). The model is
*traced*, not scripted (scripting fails on torch 2.x for this kind of code),
inside a scripted check that refuses an input of another width than the
exported one (a trace would otherwise read the wrong columns without error).
PLUMED's LibTorch must match the torch version that wrote the model; that
version is recorded next to the model and in the input file.

A CV on aligned coordinates (:class:`mdcvkit.features.AlignedPositions`) is
exported as ``FIT_TO_TEMPLATE`` (TYPE=OPTIMAL, to a reference PDB of the fit
template) followed by the ``POSITION`` of each atom; a CV on body-frame
coordinates (:class:`mdcvkit.features.FramePositions`) as the ``POSITION`` of
each atom, the model building the frame itself; see :func:`to_plumed`.

References: L. Bonati, G. Piccini, M. Parrinello, PNAS 118, e2113533118 (2021)
(the ``pytorch`` module of PLUMED); PLUMED's manual, ``FIT_TO_TEMPLATE`` and
``POSITION``.
"""

import copy
import json

import numpy as np
import torch

from .._io import as_path, atomic_path, trace_torchscript
from ..features import AlignedPositions, FramePositions
from .boundary import NM_TO_ANGSTROM, _module_dtype
from .descriptors import DescriptorCV, Position
from .routes import _TorchComponent

__all__ = ["to_plumed", "to_openmm_torch"]


class _DescriptorModel(torch.nn.Module):
    """Raw descriptors (float32, Å / rad) -> CV (float32): what PYTORCH_MODEL runs."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, descriptors):
        return self.head(descriptors.double()).float()


class _AlignedModel(torch.nn.Module):
    """PLUMED's positions after FIT_TO_TEMPLATE, ``(1, 3 n_atoms)`` float32 in nm -> CV (float32).

    Converts nm to Å and centres the atoms on their weighted centroid, as
    :class:`~mdcvkit.features.AlignedPositions` does, keeps its ``atoms``, then applies the fitted
    model's ``encode``.
    """

    def __init__(self, model, weights, atoms):
        super().__init__()
        self.model = model
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("atoms", torch.as_tensor(atoms, dtype=torch.long))

    def forward(self, positions):
        x = positions.double().reshape(positions.shape[0], -1, 3) * NM_TO_ANGSTROM
        centred = x - (self.weights[:, None] * x).sum(dim=1, keepdim=True)
        return self.model.encode(centred[:, self.atoms].flatten(1)).float()


def _check_cv(cv):
    if not isinstance(cv, DescriptorCV):
        raise ValueError(
            f"cv must be a mdcvkit.biasing.DescriptorCV (descriptors PLUMED computes) or the fitted CV of "
            f"mdcvkit.AutoencoderCV (results.model), not {type(cv).__name__}; "
            f"rebuild the CV from Distance/Torsion/Position descriptors"
        )


def _particles(particles, n_atoms):
    particles = np.arange(n_atoms) if particles is None else np.asarray(particles, dtype=np.int64)
    if particles.ndim != 1 or particles.size < n_atoms:
        raise ValueError(
            f"particles has {particles.size} entries but the CV reads {n_atoms} atoms; "
            f"pass one system index per CV atom"
        )
    if particles.min() < 0:
        raise ValueError(f"particles must be system indices >= 0, got {particles.min()}..{particles.max()}")
    return particles


def _write_model(traced, path, meta):
    with atomic_path(path) as tmp:
        traced.save(str(tmp))
    with atomic_path(path.with_name("model.json")) as tmp:
        tmp.write_text(json.dumps({"torch_version": torch.__version__, **meta}, indent=2) + "\n")


def _tail(label, names, temperature):
    """Comments naming the components, commented OPES and metadynamics examples, a PRINT."""
    outputs = ",".join(f"{label}.node-{k}" for k in range(len(names)))
    sigmas = ",".join(["0.05"] * len(names))
    return [
        f"# components: {', '.join(f'{label}.node-{k} = {n}' for k, n in enumerate(names))}",
        "# OPES (uncomment one bias):",
        f"# opes: OPES_METAD ARG={outputs} PACE=500 BARRIER=40 TEMP={temperature:g}",
        "# well-tempered metadynamics:",
        f"# metad: METAD ARG={outputs} SIGMA={sigmas} HEIGHT=1.2 PACE=500 BIASFACTOR=10 TEMP={temperature:g}",
        f"PRINT ARG={outputs} STRIDE=100 FILE=COLVAR",
        "",
    ]


def _write_text(path, lines):
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


def to_plumed(cv, folder, *, particles=None, model_file="model.ptc", label="cv", temperature=300.0,
              reference_file="reference.pdb"):  # fmt: skip
    """Write a TorchScript model and a ``plumed.dat`` that computes the CV in PLUMED.

    Parameters
    ----------
    cv : DescriptorCV or torch.nn.Module
        A :class:`DescriptorCV`, whose descriptors become PLUMED actions and the rest the traced
        model; or the fitted CV of :class:`mdcvkit.AutoencoderCV` (``results.model``, with
        ``featurizer`` and ``model``): on :class:`~mdcvkit.features.AlignedPositions` it is
        exported as ``FIT_TO_TEMPLATE`` + ``POSITION`` (see Notes), on
        :class:`~mdcvkit.features.FramePositions` as ``POSITION`` only, on rotation-invariant
        features it is first rebuilt by :meth:`DescriptorCV.from_collective_variable`.
    folder : str or path-like
        Created if missing; receives ``model_file``, ``plumed.dat``, ``model.json`` and, for
        aligned coordinates, ``reference_file``. Files are written atomically.
    particles : sequence of int, optional
        System (0-based) index of each CV input atom; default the identity. PLUMED's atom
        numbers are these plus one.
    model_file : str, default "model.ptc"
    label : str, default "cv"
        PLUMED label of the model action; the components are ``{label}.node-k``.
    temperature : float, default 300
        Temperature (K) written into the commented bias examples.
    reference_file : str, default "reference.pdb"
        Fit template for aligned coordinates.

    Returns
    -------
    pathlib.Path
        Path of ``plumed.dat``.

    Raises
    ------
    ValueError
        For a CV that is neither (e.g. a plain function, raw-position features), or bad ``particles``.

    Notes
    -----
    *Descriptor CVs*: lengths are in Å on both sides (``UNITS LENGTH=A``), angles in rad,
    energies in kJ/mol. The input holds an OPES and a well-tempered metadynamics block,
    commented out.

    *Aligned coordinates*: ``plumed.dat`` keeps PLUMED's default units (nm, kJ/mol) and reads

    .. code-block:: none

        FIT_TO_TEMPLATE STRIDE=1 REFERENCE=reference.pdb TYPE=OPTIMAL
        p0: POSITION ATOM=5 NOPBC
        ...
        cv: PYTORCH_MODEL FILE=model.ptc ARG=p0.x,p0.y,p0.z,p1.x,...

    ``reference.pdb`` holds the featurizer's reference centred on its weighted centroid, in
    Å, with the fit weights (scaled to a largest weight of 1) as both occupancy (PLUMED's
    alignment weights) and beta (its displacement weights). FIT_TO_TEMPLATE then sets every
    atom to ``R (x - c_x) + c_ref``, with ``c_x`` the weighted centroid of the template atoms
    and ``R`` the rotation that best fits them onto the template; the model converts nm to Å
    and subtracts the weighted centroid of its inputs (``c_ref`` up to rounding), which gives
    the featurizer's aligned coordinates, so PLUMED computes the same CV as
    ``transform``. Caveats:

    * PLUMED propagates the bias through the fit (the rotation's dependence on the positions
      included), so the forces are minus the gradient of the same function; like the Kabsch
      fit in torch, that gradient is undefined where the fit is degenerate (the template's
      atoms collinear, or the fit's 3 × 3 correlation matrix with repeated singular values,
      e.g. a structure far from the template). PLUMED's manual long flagged TYPE=OPTIMAL as
      being "in testing phase".
    * FIT_TO_TEMPLATE moves the positions that *every later action* sees, for all atoms:
      keep it first and at ``STRIDE=1``, and note that CVs placed after it that depend on
      the orientation (POSITION, DISTANCE with COMPONENTS, CELL) change meaning.
    * With periodic boundaries the molecule must be whole before the fit: uncomment the
      ``WHOLEMOLECULES`` line written above it (it rebuilds the listed atoms in order, each
      within half a box of the previous one).
    * The template is written with 3-5 decimals (Å) and the weights with 4 (relative), the
      PDB fields' width; the model runs in float32 in PLUMED. Atom numbers are limited to
      five digits (the PDB serial field), which PLUMED reads by column.
    """
    folder = as_path(folder, "folder")
    if isinstance(getattr(cv, "featurizer", None), AlignedPositions):
        return _aligned_to_plumed(cv, folder, particles, model_file, label, temperature, reference_file)
    if isinstance(getattr(cv, "featurizer", None), FramePositions):
        return _frame_to_plumed(cv, folder, particles, model_file, label, temperature)
    if not isinstance(cv, DescriptorCV) and hasattr(cv, "featurizer") and hasattr(cv, "model"):
        cv = DescriptorCV.from_collective_variable(cv)
    _check_cv(cv)
    folder.mkdir(parents=True, exist_ok=True)
    descriptors = cv.descriptors
    particles = _particles(particles, cv.n_atoms)
    model = _DescriptorModel(cv.head).eval()
    positions = 10 * torch.rand(1, cv.n_atoms, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        example = cv.descriptor_values(positions).float()
    traced = trace_torchscript(model, example)
    meta = {
        "inputs": [type(d).__name__ for d in descriptors],
        "n_inputs": len(descriptors),
        "outputs": cv.names,
        "dtype": "float32",
        "input_shape": [1, len(descriptors)],
        "units": {"length": "Å", "angle": "rad", "energy": "kJ/mol"},
    }
    _write_model(traced, folder / model_file, meta)

    lines = [
        f"# CV written by mdcvkit for PLUMED's PYTORCH_MODEL; torch {torch.__version__} wrote {model_file}:",
        "# PLUMED must be linked against the same LibTorch version.",
        "UNITS LENGTH=A ENERGY=kj/mol",
    ]
    args = []
    for k, descriptor in enumerate(descriptors):
        name = f"d{k}"
        lines.append(descriptor.plumed(name, particles))
        args.append(descriptor.plumed_component(name) if isinstance(descriptor, Position) else name)
    lines.append(f"{label}: PYTORCH_MODEL FILE={model_file} ARG={','.join(args)}")
    return _write_text(folder / "plumed.dat", lines + _tail(label, cv.names, temperature))


def _pdb_lines(positions, weights, serials, names):
    """ATOM records PLUMED reads by column: x, y, z in columns 31-54, occupancy 55-60, beta 61-66."""
    largest = float(np.abs(positions).max())
    decimals = next((d for d in (5, 4, 3) if len(f"{-largest:.{d}f}") <= 8), None)
    if decimals is None:
        raise ValueError(f"the fit template spans {largest:.0f} Å, too wide for the PDB coordinate fields")
    lines = ["REMARK fit template written by mdcvkit: centred on its weighted centroid, Å; occupancy = beta = weight"]
    for serial, name, xyz, w in zip(serials, names, positions, weights, strict=True):
        coordinates = "".join(f"{v:8.{decimals}f}" for v in xyz)
        lines.append(f"ATOM  {serial:5d} {name[:4]:<4s} MOL A   1    {coordinates}{w:6.4f}{w:6.4f}")
    return lines + ["END", ""]


def _aligned_to_plumed(cv, folder, particles, model_file, label, temperature, reference_file):
    featurizer = cv.featurizer
    n_atoms = featurizer.n_atoms
    particles = _particles(particles, n_atoms)[:n_atoms]
    if particles.max() > 99_998:
        raise ValueError(
            f"particles must be system indices from 0 to 99998 for aligned coordinates (the fit template is a "
            f"PDB file, whose atom serials, index + 1, have five digits), got up to {particles.max()}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    weights = featurizer.weights.detach().double()
    reference = featurizer.reference.detach().double()
    centred = (reference - (weights[:, None] * reference).sum(0) / weights.sum()).numpy()
    names = [str(n).split(":")[-1] or "X" for n in featurizer.names]
    _write_text(folder / reference_file, _pdb_lines(centred, (weights / weights.max()).numpy(), particles + 1, names))
    model = _AlignedModel(copy.deepcopy(cv.model).double().eval(), weights, featurizer.atoms)
    atoms = ",".join(str(int(p) + 1) for p in particles)
    header = [
        "# Periodic systems: make the molecule whole before the fit (atoms rebuilt in this order):",
        f"# WHOLEMOLECULES ENTITY0={atoms}",
        f"FIT_TO_TEMPLATE STRIDE=1 REFERENCE={reference_file} TYPE=OPTIMAL",
    ]
    meta = {"inputs": "POSITION x, y, z of each atom after FIT_TO_TEMPLATE", "reference": reference_file}
    return _positions_to_plumed(model, centred / NM_TO_ANGSTROM, particles, folder, model_file, label,
                                temperature, header, meta)  # fmt: skip


class _FrameModel(torch.nn.Module):
    """PLUMED's positions ``(1, 3 n_atoms)`` float32 in nm -> CV (float32) of a body-frame CV."""

    def __init__(self, cv):
        super().__init__()
        self.cv = cv

    def forward(self, positions):
        return self.cv(positions.double().reshape(positions.shape[0], -1, 3) * NM_TO_ANGSTROM).float()


def _frame_to_plumed(cv, folder, particles, model_file, label, temperature):
    n_atoms = cv.featurizer.n_atoms
    particles = _particles(particles, n_atoms)[:n_atoms]
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    example = (0.1 + 0.3 * torch.rand(n_atoms, 3, generator=generator, dtype=torch.float64)).numpy()
    header = ["# Body-frame coordinates need no fit: the model builds the frame from the positions itself.",
              "# Periodic systems: make the molecule whole first (WHOLEMOLECULES)."]  # fmt: skip
    meta = {"inputs": "POSITION x, y, z of each atom", "frame": [int(particles[k]) + 1 for k in cv.featurizer.frame]}
    return _positions_to_plumed(_FrameModel(copy.deepcopy(cv).double().eval()), example, particles, folder,
                                model_file, label, temperature, header, meta)  # fmt: skip


def _positions_to_plumed(model, example, particles, folder, model_file, label, temperature, header, meta):
    """Trace ``model`` (positions in nm, ``(1, 3 n_atoms)``) and write a plumed.dat feeding it POSITIONs."""
    n_atoms = len(particles)
    example = torch.as_tensor(example, dtype=torch.float32).reshape(1, -1)
    traced = trace_torchscript(model, example)
    names_cv = [f"cv{k}" for k in range(int(model(example).shape[-1]))]
    meta = {**meta, "n_inputs": 3 * n_atoms, "outputs": names_cv, "dtype": "float32",
            "input_shape": [1, 3 * n_atoms], "units": {"length": "nm", "energy": "kJ/mol"},
            "atoms": [int(p) + 1 for p in particles]}  # fmt: skip
    _write_model(traced, folder / model_file, meta)
    lines = [
        f"# CV written by mdcvkit for PLUMED's PYTORCH_MODEL; torch {torch.__version__} wrote {model_file}:",
        "# PLUMED must be linked against the same LibTorch version.",
        "# Lengths in PLUMED's default unit, nm: the model converts them to Å itself.",
        *header,
    ]
    lines += [f"p{k}: POSITION ATOM={int(p) + 1} NOPBC" for k, p in enumerate(particles)]
    args = ",".join(f"p{k}.{axis}" for k in range(n_atoms) for axis in "xyz")
    lines.append(f"{label}: PYTORCH_MODEL FILE={model_file} ARG={args}")
    return _write_text(folder / "plumed.dat", lines + _tail(label, names_cv, temperature))


def to_openmm_torch(cv, folder, n_particles, *, particles=None, prefix="cv"):
    """Write one traced scalar module per CV component for openmm-torch's ``TorchForce``.

    Each module maps all system positions ``(n_particles, 3)`` in nm (float32) to the CV
    component (a scalar); use it as a collective variable of a CustomCVForce.

    Parameters
    ----------
    cv : torch.nn.Module or callable
        Positions (Å) -> ``(n_frames, n_cv)``.
    folder : str or path-like
    n_particles : int
        Number of particles of the OpenMM System.
    particles : sequence of int, optional
        System index of each CV input atom; default ``range(n_particles)``.
    prefix : str, default "cv"
        Files are ``{prefix}{k}.pt``.

    Returns
    -------
    list of pathlib.Path
        One file per CV component.
    """
    folder = as_path(folder, "folder")
    folder.mkdir(parents=True, exist_ok=True)
    particles = np.arange(n_particles) if particles is None else np.asarray(particles, dtype=np.int64)
    example = torch.rand(int(n_particles), 3, generator=torch.Generator().manual_seed(0)) + 0.5
    with torch.no_grad():
        n_cv = cv((example[particles].unsqueeze(0) * 10).to(_module_dtype(cv))).shape[-1]
    paths = []
    for k in range(n_cv):
        traced = trace_torchscript(_TorchComponent(cv, particles, k), example, free_first=False)
        path = folder / f"{prefix}{k}.pt"
        traced.save(str(path))
        paths.append(path)
    (folder / f"{prefix}.json").write_text(json.dumps({"torch_version": torch.__version__, "n_cv": n_cv}) + "\n")
    return paths
