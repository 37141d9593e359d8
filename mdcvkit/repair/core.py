"""The repair of generated structures: :class:`BondGeometryRepair`."""

import os
import tempfile
import warnings

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase

from .._checks import check_slice
from ..frames import in_memory, read_frames
from .geometry import _check_groups, _distances, _frame_dataset, _Measures
from .projection import _Leaves, _Projector

__all__ = ["BondGeometryRepair", "REFINERS"]

#: Refinement back-ends of ``refine=``.
REFINERS = ("openmm",)
#: Rounds of chirality restoration and re-projection (only frames still inverted or trapped take part):
#: on adenylate kinase with σ = 0.3 Å noise one frame in ten needed a fourth round.
_CHIRALITY_ROUNDS = 6
#: Force tolerance (kJ/mol/nm) of the OpenMM minimisation of ``refine="openmm"`` (OpenMM's default).
_MINIMISER_TOLERANCE = 10.0


class BondGeometryRepair(AnalysisBase):
    """Repair the bond lengths, bond angles and chirality of every frame of an AtomGroup.

    Parameters
    ----------
    atomgroup : AtomGroup
        Atoms to repair, over the frames of its Universe (e.g. decoded structures
        loaded with ``MemoryReader``). Bonds come from the topology; where there are
        none, or some atoms have none, they are guessed from the distances of the
        first target frame (with a warning).
    reference : AtomGroup, optional
        Same atoms (count and names) in a trajectory of good structures, e.g. the
        MD training data: the targets are its mean bond lengths, angles, 1–3 and
        planar 1–4 distances over all its frames, and its chirality. Without it the
        first analysed frame of ``atomgroup`` gives them.
    angles : bool, default True
        Also constrain bond angles (as 1–3 distances) and planar groups (1–4
        distances); ``False`` constrains bond lengths only.
    refine : {None, "openmm"}, default None
        ``"openmm"``: after the projection, minimise the energy of each frame with
        ``forcefield`` in vacuum (no cutoff, no constraints) until the largest force is
        below 10 kJ/mol/nm, heavy atoms restrained harmonically to their projected
        positions. The topology is built by OpenMM from a PDB file of ``atomgroup``
        (standard residue names and bonds).
    tolerance : float, default 1e-4
        Convergence of a frame: the RMS move of its atoms in one projection sweep is at
        most this (Å).
    max_iterations : int, default 200
        Most projection sweeps; a warning says when they did not converge.
    forcefield : sequence of str, default ("amber14-all.xml",)
        OpenMM force-field files of ``refine="openmm"``.
    restraint : float, default 1000.0
        Force constant (kJ/mol/nm²) of the heavy-atom restraints of ``refine="openmm"``.
    device : str, default "cpu"
        Torch device of the projection (``"cuda"`` where there is one).

    Attributes
    ----------
    results.positions : numpy.ndarray, shape (n_frames, n_atoms, 3)
        Repaired positions (Å).
    results.universe : MDAnalysis.Universe
        In-memory Universe of ``atomgroup``'s atoms (same topology) with the repaired frames.
    results.report : xarray.Dataset, dim "frame"
        Per frame, before and after: ``bond_rmsd_*`` and ``bond_max_deviation_*`` (Å),
        ``angle_rmsd_*`` (degrees), ``clashes_*`` (heavy-atom pairs, see
        :func:`~mdcvkit.repair.structure_quality`), ``chirality_inversions_*``;
        ``heavy_atom_displacement`` (RMS, Å); with ``refine``, ``energy_before`` and
        ``energy_after`` (kJ/mol). Attributes: ``targets``, ``iterations``, ``converged``, and
        the numbers of bonds, angles, planar pairs and stereocentres.
    bonds, angles : numpy.ndarray of int
        The bonds (n_bonds, 2) and angles (n_angles, 3) used, indices into ``atomgroup``.

    Raises
    ------
    ValueError
        For a ``reference`` of other atoms, atoms without masses, an unknown ``refine``, or a
        non-positive ``tolerance`` or ``max_iterations``.
    TypeError
        When ``atomgroup`` or ``reference`` is not an MDAnalysis AtomGroup.

    Notes
    -----
    All frames are repaired at once: inverted stereocentres are reflected back, then a mass-weighted
    projection onto the target distances moves hydrogens most; bond RMSDs end near 0.002–0.005 Å,
    not 0. Clashes are measured, and only ``refine="openmm"`` removes them. The stages are described
    in :doc:`/guide/generate_repair_compare`.

    Examples
    --------
    >>> import mdcvkit as mk
    >>> u = mk.datasets.alanine_dipeptide()
    >>> reference = u.atoms  # better: an in-memory subsample of the MD frames, all frames are read
    >>> repair = mk.BondGeometryRepair(generated.atoms, reference=reference).run()  # doctest: +SKIP
    >>> repair.results.report.bond_rmsd_after.max()  # doctest: +SKIP

    References
    ----------
    J.-P. Ryckaert, G. Ciccotti, H. J. C. Berendsen, J. Comput. Phys. 23, 327 (1977) (SHAKE);
    D. G. Anderson, J. ACM 12, 547 (1965) (acceleration); V. B. Chen et al., Acta Cryst. D66, 12
    (2010) (MolProbity clash score).
    """

    def __init__(self, atomgroup, reference=None, *, angles=True, refine=None, tolerance=1e-4, max_iterations=200,
                 forcefield=("amber14-all.xml",), restraint=1000.0, device="cpu"):
        _check_groups(atomgroup, reference)
        if refine is not None and refine not in REFINERS:
            raise ValueError(f"refine={refine!r} is not known; use None or one of {list(REFINERS)}")
        if not np.isfinite(tolerance) or tolerance <= 0:
            raise ValueError(f"tolerance={tolerance!r} must be a positive number of Å, e.g. 1e-3")
        if not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1:
            raise ValueError(f"max_iterations={max_iterations!r} must be a positive integer, e.g. 200")
        super().__init__(atomgroup.universe.trajectory)
        self._atomgroup = atomgroup
        self.reference = reference
        self.angles_constrained = bool(angles)
        self.refine = refine
        self.tolerance = float(tolerance)
        self.max_iterations = int(max_iterations)
        self.forcefield = tuple(forcefield)
        self.restraint = float(restraint)
        self.device = device
        try:
            masses = np.asarray(atomgroup.masses, dtype=float)
        except AttributeError as err:  # MDAnalysis' NoDataError: a topology without masses
            raise ValueError(
                "atomgroup has no masses (its topology has none); set them with u.add_TopologyAttr('masses', ...) "
                "or u.guess_TopologyAttrs(to_guess=['masses'])") from err
        if np.any(~np.isfinite(masses) | (masses <= 0)):
            raise ValueError(
                f"atomgroup has atoms without a positive mass (indices {atomgroup[masses <= 0].indices[:4]}...); "
                "set them with u.add_TopologyAttr('masses', ...) or "
                "u.guess_TopologyAttrs(to_guess=['masses'])"
            )
        self._masses = masses

    def run(self, start=None, stop=None, step=None, frames=None, verbose=None, **kwargs):
        """Repair the frames ``start:stop:step`` (or ``frames``) of the trajectory; see the class.

        Parameters
        ----------
        start, stop, step : int, optional
            Slice of the trajectory to repair.
        frames : array_like of int or bool, optional
            Frames to repair instead of a slice.
        verbose : bool, optional
            Progress bar.
        **kwargs
            Passed to :meth:`MDAnalysis.analysis.base.AnalysisBase.run` (e.g. ``backend``).

        Returns
        -------
        self
        """
        check_slice(start, stop, step)
        return super().run(start=start, stop=stop, step=step, frames=frames, verbose=verbose, **kwargs)

    def _prepare(self):
        self._positions = np.empty((self.n_frames, self._atomgroup.n_atoms, 3), dtype=np.float64)
        self._times = np.empty(self.n_frames)

    def _single_frame(self):
        self._positions[self._frame_index] = self._atomgroup.positions
        self._times[self._frame_index] = self._ts.time

    def _conclude(self):
        positions = self._positions
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=(1, 2)))
        if len(bad):
            raise ValueError(
                f"frames {self.frames[bad][:10].tolist()} of atomgroup have NaN or infinite coordinates; "
                "remove them (e.g. run(frames=...)) before repairing"
            )
        if self.reference is None:
            reference_positions, target_source = positions[:1], "first frame"
        else:
            reference_positions, target_source = read_frames(self.reference, "reference")[0], "reference"
        measures = _Measures(self._atomgroup, reference_positions, self._masses)
        self.bonds, self.angles, terms = measures.bonds, measures.angles, measures.terms
        pairs = [self.bonds]
        if self.angles_constrained:
            pairs += [self.angles[:, [0, 2]], terms["planar"]]
        pairs = np.concatenate(pairs)
        targets = _distances(reference_positions, pairs).mean(axis=0)
        leaves = _Leaves(self.bonds, measures.neighbours, measures.bond_targets, reference_positions[0])
        repaired, iterations, converged = self._fast_stage(positions, pairs, targets, measures.stereo, leaves)
        if not converged.all():
            warnings.warn(
                f"the projection did not converge to tolerance={self.tolerance} Å in max_iterations="
                f"{self.max_iterations} sweeps for {int((~converged).sum())} of {len(converged)} frames; "
                "raise max_iterations or tolerance", stacklevel=2)
        energies = {}
        if self.refine == "openmm":
            repaired, energies = self._refine_openmm(positions, repaired, measures.heavy)
        self.results.positions = repaired
        self.results.universe = in_memory(self._atomgroup, repaired)
        variables = {**measures(positions, "before"), **measures(repaired, "after")}
        displacement = np.sqrt(((repaired - positions)[:, measures.heavy] ** 2).sum(-1).mean(axis=1))
        variables["heavy_atom_displacement"] = (displacement, "RMS displacement of heavy atoms", "Å")
        for stage, values in energies.items():
            variables[f"energy_{stage}"] = (values, f"potential energy ({', '.join(self.forcefield)}), {stage}",
                                            "kJ/mol")
        self.results.report = _frame_dataset(variables, self.frames, self._times)
        self.results.report.attrs.update(
            targets=target_source, iterations=iterations, converged=bool(converged.all()),
            n_bonds=len(self.bonds), n_angles=len(self.angles), n_planar_pairs=len(terms["planar"]),
            n_stereocentres=len(measures.stereo.centres))

    def _fast_stage(self, positions, pairs, targets, stereo, leaves):
        """Projection of all frames with chirality restoration; returns positions, sweeps and converged frames.

        Centres judged by their three heavy neighbours (Cα) are judged reliably on the noisy
        input and restored before the first projection; the handedness of CH2 and CH3 hydrogens
        means something only once the local geometry is exact, so those are restored after it.
        Frames with inverted centres or trapped terminal atoms are mended and projected again,
        for a few rounds.
        """
        project = _Projector(pairs, targets, self._masses, device=self.device)
        inverted = stereo.inverted(positions) & ~stereo.swap
        stuck = np.zeros((len(positions), len(leaves.leaf)), dtype=bool)
        repaired = positions.copy()
        converged = np.ones(len(positions), dtype=bool)
        todo, iterations = np.arange(len(positions)), 0
        for _ in range(_CHIRALITY_ROUNDS):
            start = leaves.place(stereo.restore(repaired[todo], inverted[todo]), stuck[todo])
            repaired[todo], sweeps, converged[todo] = project(
                start, self.tolerance, self.max_iterations, release=lambda x: leaves.stuck(x).any(axis=1))
            iterations = max(iterations, sweeps)
            inverted, stuck = stereo.inverted(repaired), leaves.stuck(repaired)
            todo = np.flatnonzero(inverted.any(axis=1) | stuck.any(axis=1))
            if not len(todo):
                break
        stuck &= converged[:, None]  # a frame that did not converge has stretched bonds anyway
        if inverted.any() or stuck.any():
            frames = int((inverted.any(axis=1) | stuck.any(axis=1)).sum())
            warnings.warn(f"{int(inverted.sum())} stereocentres are still inverted and {int(stuck.sum())} terminal "
                          f"atoms trapped in {frames} frames after {_CHIRALITY_ROUNDS} rounds of restoration; "
                          "check those frames", stacklevel=3)
        return repaired, iterations, converged

    def _refine_openmm(self, before, projected, heavy):
        """Restrained minimisation of every frame; returns positions (Å) and energies (kJ/mol) before and after."""
        try:
            import openmm
            import openmm.app as app
            from openmm import unit
        except ImportError as err:  # pragma: no cover - openmm is a dependency of mdcvkit
            raise ImportError("refine='openmm' needs OpenMM: pip install openmm") from err
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "topology.pdb")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._atomgroup.write(path)
            pdb = app.PDBFile(path)
        try:
            system = app.ForceField(*self.forcefield).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                                   constraints=None)
        except Exception as err:  # OpenMM raises plain Exception for missing templates
            raise ValueError(
                f"refine='openmm' cannot build a force field for these atoms with forcefield={self.forcefield}: "
                f"{err}; pass forcefield files that have templates for these residues, or refine=None"
            ) from err
        if system.getNumParticles() != len(heavy):
            raise ValueError(
                f"refine='openmm': the force field system has {system.getNumParticles()} particles but atomgroup "
                f"has {len(heavy)} atoms; pass a complete, protonated molecule or refine=None"
            )
        restraint = openmm.CustomExternalForce("0.5*k_restraint*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        restraint.addGlobalParameter("k_restraint", self.restraint)
        for name in ("x0", "y0", "z0"):
            restraint.addPerParticleParameter(name)
        heavy_index = np.flatnonzero(heavy)
        for k in heavy_index:
            restraint.addParticle(int(k), [0.0, 0.0, 0.0])
        restraint.setForceGroup(1)
        system.addForce(restraint)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001))

        def energy():
            state = context.getState(getEnergy=True, groups={0})
            return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

        refined = np.empty_like(projected)
        energies = {"before": np.empty(len(projected)), "after": np.empty(len(projected))}
        for f in range(len(projected)):
            context.setPositions(before[f] / 10.0)
            energies["before"][f] = energy()
            nm = projected[f] / 10.0
            for n, k in enumerate(heavy_index):
                restraint.setParticleParameters(n, int(k), nm[k].tolist())
            restraint.updateParametersInContext(context)
            context.setPositions(nm)
            openmm.LocalEnergyMinimizer.minimize(context, _MINIMISER_TOLERANCE, 0)
            refined[f] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
            energies["after"][f] = energy()
        return refined, energies
