"""Geometry of covalent structures: bonded terms, bond and angle deviations, chirality, clashes.

The measures of :class:`~mdcvkit.repair.BondGeometryRepair`'s report take plain
arrays (:func:`bond_geometry`, :func:`chirality`, :func:`count_clashes`) so that
ensemble comparisons can reuse them; :func:`structure_quality` applies them to
every frame of an AtomGroup against a reference's geometry.
"""

import warnings

import MDAnalysis as mda
import numpy as np
import xarray as xr
from MDAnalysis.exceptions import NoDataError
from MDAnalysis.guesser.default_guesser import DefaultGuesser
from scipy.spatial import cKDTree

from ..frames import read_frames

__all__ = ["VDW_RADII", "bonded_terms", "bond_geometry", "chirality", "count_clashes", "structure_quality"]

#: Van der Waals radii (Å) by element (Bondi 1964); the report gives other elements 1.8 Å.
VDW_RADII = {"H": 1.20, "C": 1.70, "N": 1.55, "O": 1.52, "S": 1.80, "P": 1.80, "SE": 1.90}

#: Smallest |normalised signed volume| of a stereocentre in the reference (planar centres are ~0, tetrahedral ~0.77).
_MIN_CHIRAL_VOLUME = 0.3
#: Below this many heavy atoms clashes are counted over all pairs at once, above it with a k-d tree per frame.
_DENSE_CLASH_ATOMS = 64


def _as_positions(positions, name="positions"):
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 2:
        positions = positions[None]
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"{name} has shape {positions.shape}; pass (n_frames, n_atoms, 3) positions in Å")
    return positions


def _elements(atomgroup):
    """Upper-case element symbol of every atom (from ``elements`` or guessed from names)."""
    try:
        elements = np.asarray(atomgroup.elements, dtype=str)
    except NoDataError:
        elements = np.array([], dtype=str)
    if len(elements) != atomgroup.n_atoms or np.any(elements == ""):
        elements = np.asarray(DefaultGuesser(None).guess_types(atomgroup.names), dtype=str)
    return np.char.upper(elements)


def _neighbours(bonds, n_atoms):
    neighbours = [[] for _ in range(n_atoms)]
    for i, j in bonds:
        neighbours[i].append(int(j))
        neighbours[j].append(int(i))
    return [sorted(row) for row in neighbours]


def bonded_terms(bonds, n_atoms, masses, positions=None):
    """Angles, planar 1–4 pairs, stereocentre candidates and clash exclusions of a bond graph.

    Parameters
    ----------
    bonds : array_like of int, shape (n_bonds, 2)
        Bonded pairs, as indices into the atoms (0 … n_atoms - 1).
    n_atoms : int
    masses : array_like, shape (n_atoms,)
        Atomic masses (u); they rank the neighbours of a stereocentre.
    positions : array_like, shape (n_frames, n_atoms, 3), optional
        Reference positions (Å). An atom with three neighbours counts as planar
        (sp2) only where its mean absolute normalised signed volume (:func:`chirality`) is
        below 0.3 in them; without positions every such atom does.

    Returns
    -------
    dict
        ``angles`` (n_angles, 3): bonded triples i–j–k, j the vertex;
        ``planar`` (n_planar, 2): 1–4 pairs across every bond between two planar
        atoms with three neighbours each (peptide bonds, amides, guanidinium,
        aromatic rings), whose distances fix planarity and cis/trans;
        ``centres`` (n_centres, 4): atoms with 3 or 4 neighbours followed by their
        three heaviest neighbours (ties by index), the quadruplets :func:`chirality`
        takes; ``exclusions`` (n_pairs, 2): 1–2, 1–3 and 1–4 pairs (i < j), which
        :func:`count_clashes` skips.
    """
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    masses = np.asarray(masses, dtype=float)
    neighbours = _neighbours(bonds, n_atoms)
    trigonal = [c for c in range(n_atoms) if len(neighbours[c]) == 3]
    planar_atoms = np.zeros(n_atoms, dtype=bool)
    planar_atoms[trigonal] = True
    if positions is not None and trigonal:
        volume = chirality(positions, [[c, *neighbours[c]] for c in trigonal])
        planar_atoms[trigonal] = np.abs(volume).mean(axis=0) < _MIN_CHIRAL_VOLUME
    angles = [(a, j, b) for j in range(n_atoms) for x, a in enumerate(neighbours[j]) for b in neighbours[j][x + 1:]]
    planar, dihedral_ends = [], []
    for j, k in bonds:
        ends = [(i, m) for i in neighbours[j] if i != k for m in neighbours[k] if m != j and m != i]
        dihedral_ends.extend(ends)
        if planar_atoms[j] and planar_atoms[k]:
            planar.extend(ends)
    centres = [[c, *sorted(neighbours[c], key=lambda n: (-masses[n], n))[:3]]
               for c in range(n_atoms) if len(neighbours[c]) in (3, 4)]
    angles = np.array(angles, dtype=np.int64).reshape(-1, 3)
    pairs = np.concatenate([bonds, angles[:, [0, 2]], np.array(dihedral_ends, dtype=np.int64).reshape(-1, 2)])
    exclusions = np.unique(np.sort(pairs, axis=1), axis=0)
    return {"angles": angles, "planar": np.array(planar, dtype=np.int64).reshape(-1, 2),
            "centres": np.array(centres, dtype=np.int64).reshape(-1, 4), "exclusions": exclusions}


def _distances(positions, pairs):
    return np.linalg.norm(positions[:, pairs[:, 1]] - positions[:, pairs[:, 0]], axis=-1)


def _angles(positions, angles):
    """Bond angles (degrees), shape (n_frames, n_angles)."""
    a = positions[:, angles[:, 0]] - positions[:, angles[:, 1]]
    b = positions[:, angles[:, 2]] - positions[:, angles[:, 1]]
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def bond_geometry(positions, bonds, angles, bond_targets, angle_targets):
    """Deviation of bond lengths and bond angles from their targets, per frame.

    Parameters
    ----------
    positions : array_like, shape (n_frames, n_atoms, 3)
        Positions in Å.
    bonds : array_like of int, shape (n_bonds, 2)
    angles : array_like of int, shape (n_angles, 3)
        Bonded triples i–j–k, j the vertex.
    bond_targets : array_like, shape (n_bonds,)
        Target bond lengths (Å).
    angle_targets : array_like, shape (n_angles,)
        Target bond angles (degrees).

    Returns
    -------
    dict of numpy.ndarray, each of shape (n_frames,)
        ``bond_rmsd`` (Å), ``bond_max_deviation`` (Å, largest absolute difference of length and target)
        and ``angle_rmsd`` (degrees); NaN where there are no bonds or angles.
    """
    positions = _as_positions(positions)
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    angles = np.asarray(angles, dtype=np.int64).reshape(-1, 3)
    n_frames = len(positions)
    bond_dev = _distances(positions, bonds) - np.asarray(bond_targets, dtype=float)
    angle_dev = _angles(positions, angles) - np.asarray(angle_targets, dtype=float)
    nan = np.full(n_frames, np.nan)
    return {
        "bond_rmsd": np.sqrt((bond_dev**2).mean(axis=1)) if len(bonds) else nan,
        "bond_max_deviation": np.abs(bond_dev).max(axis=1) if len(bonds) else nan,
        "angle_rmsd": np.sqrt((angle_dev**2).mean(axis=1)) if len(angles) else nan,
    }


def chirality(positions, centres):
    """Normalised signed volume of each stereocentre, per frame.

    Parameters
    ----------
    positions : array_like, shape (n_frames, n_atoms, 3)
        Positions in Å.
    centres : array_like of int, shape (n_centres, 4)
        Centre atom c and three of its neighbours a, b, d (as :func:`bonded_terms` gives them).

    Returns
    -------
    numpy.ndarray, shape (n_frames, n_centres)
        û_a · (û_b × û_d) with û the unit vectors from c to its neighbours:
        about ±0.77 at a tetrahedral centre, 0 at a planar one. A sign that
        differs from the reference's is an inverted centre.
    """
    positions = _as_positions(positions)
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 4)
    vectors = positions[:, centres[:, 1:]] - positions[:, centres[:, :1]]
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.einsum("fci,fci->fc", vectors[:, :, 0], np.cross(vectors[:, :, 1], vectors[:, :, 2]))


def count_clashes(positions, radii, exclusions, *, polar=None, overlap=0.4, hbond_distance=2.5):
    """Steric clashes per frame: non-excluded atom pairs closer than the sum of their vdW radii minus ``overlap``.

    Parameters
    ----------
    positions : array_like, shape (n_frames, n_atoms, 3)
        Positions in Å of the atoms to check (the repair report passes the heavy atoms).
    radii : array_like, shape (n_atoms,)
        Van der Waals radii (Å), e.g. from :data:`VDW_RADII`.
    exclusions : array_like of int, shape (n_pairs, 2)
        Pairs never counted (1–2, 1–3 and 1–4 pairs: ``bonded_terms(...)["exclusions"]``
        restricted to these atoms).
    polar : array_like of bool, shape (n_atoms,), optional
        Hydrogen-bond donors and acceptors (N and O). A pair of two polar atoms is
        a hydrogen bond, not a clash, unless it is closer than ``hbond_distance``.
    overlap : float, default 0.4
        Allowed overlap (Å), MolProbity's threshold for a serious clash.
    hbond_distance : float, default 2.5
        Shortest donor–acceptor distance (Å) that is not a clash.

    Returns
    -------
    numpy.ndarray of int, shape (n_frames,)
    """
    positions = _as_positions(positions)
    n_frames, n_atoms, _ = positions.shape
    radii = np.asarray(radii, dtype=float)
    polar = np.zeros(n_atoms, dtype=bool) if polar is None else np.asarray(polar, dtype=bool)
    excluded = np.asarray(exclusions, dtype=np.int64).reshape(-1, 2)
    excluded_keys = np.unique(np.sort(excluded, axis=1) @ np.array([n_atoms, 1]))

    def is_excluded(pairs):
        keys = pairs @ np.array([n_atoms, 1])
        found = np.searchsorted(excluded_keys, keys).clip(max=max(len(excluded_keys) - 1, 0))
        return excluded_keys[found] == keys if len(excluded_keys) else np.zeros(len(keys), dtype=bool)

    def limit(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        contact = radii[i] + radii[j] - overlap
        return np.where(polar[i] & polar[j], np.minimum(hbond_distance, contact), contact)

    if n_atoms <= _DENSE_CLASH_ATOMS:
        pairs = np.stack(np.triu_indices(n_atoms, k=1), axis=1)
        pairs = pairs[~is_excluded(pairs)]
        return (_distances(positions, pairs) < limit(pairs)).sum(axis=1)
    cutoff = 2 * radii.max() - overlap
    counts = np.zeros(n_frames, dtype=np.int64)
    for f in range(n_frames):
        pairs = cKDTree(positions[f]).query_pairs(cutoff, output_type="ndarray")  # i < j
        close = pairs[_distances(positions[f:f + 1], pairs)[0] < limit(pairs)]
        counts[f] = np.count_nonzero(~is_excluded(close))
    return counts


class _Stereocentres:
    """Stereocentres of a reference and how to restore them.

    Centres with two or more hydrogen leaves (CH2, CH3, NH3+) are restored by swapping
    the positions of two of those hydrogens, which moves no heavy atom; the others
    (Cα) by reflecting the centre through the plane of its three heaviest
    neighbours, and its hydrogen leaves too when they then lie on the wrong side.
    """

    def __init__(self, centres, reference_positions, neighbours, hydrogen):
        volume = chirality(reference_positions, centres)
        sign = np.sign(volume)
        chiral = (np.abs(volume).min(axis=0) > _MIN_CHIRAL_VOLUME) & np.all(sign == sign[:1], axis=0)
        self.centres = centres[chiral]
        self.sign = sign[0, chiral]
        leaves = [[n for n in neighbours[c] if hydrogen[n] and len(neighbours[n]) == 1] for c in self.centres[:, 0]]
        self.swap = np.array([len(row) >= 2 for row in leaves], dtype=bool)
        self.pairs = np.array([row[-2:] for row, s in zip(leaves, self.swap, strict=True) if s],
                              dtype=np.int64).reshape(-1, 2)
        reflected = [row for row, s in zip(leaves, self.swap, strict=True) if not s]
        self.leaves = np.array([row[0] if row else -1 for row in reflected], dtype=np.int64)

    def inverted(self, positions):
        """Bool (n_frames, n_centres): the centre's handedness differs from the reference."""
        return np.sign(chirality(positions, self.centres)) != self.sign

    def restore(self, positions, inverted):
        """Positions with the inverted centres put back to the reference's handedness (a copy)."""
        positions = positions.copy()
        frames, k = np.nonzero(inverted[:, self.swap])
        a, b = self.pairs[k, 0], self.pairs[k, 1]
        positions[frames, a], positions[frames, b] = positions[frames, b], positions[frames, a].copy()
        frames, k = np.nonzero(inverted[:, ~self.swap])
        centre, heavy = self.centres[~self.swap][k, 0], self.centres[~self.swap][k, 1:]
        p = positions[frames[:, None], heavy]
        normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        height = ((positions[frames, centre] - p[:, 0]) * normal).sum(1)
        positions[frames, centre] -= 2 * height[:, None] * normal
        leaf = self.leaves[k]
        has_leaf = leaf >= 0
        frames, leaf, normal, p0, height = frames[has_leaf], leaf[has_leaf], normal[has_leaf], p[has_leaf, 0], \
            height[has_leaf]
        leaf_height = ((positions[frames, leaf] - p0) * normal).sum(1)
        wrong = np.sign(leaf_height) != -np.sign(height)
        positions[frames[wrong], leaf[wrong]] -= 2 * leaf_height[wrong, None] * normal[wrong]
        return positions


def _group_bonds(group, positions):
    """Bonds (local indices, i < j) of the topology in ``group``, guessed from ``positions`` where atoms have none."""
    index = {int(atom): k for k, atom in enumerate(group.indices)}
    try:
        bonds = [(index[a], index[b]) for a, b in group.bonds.indices if a in index and b in index]
    except NoDataError:
        bonds = []
    bonded = np.zeros(group.n_atoms, dtype=bool)
    bonded[np.asarray(bonds, dtype=np.int64).ravel()] = True
    if group.n_atoms > 1 and not bonded.all():
        try:
            guessed = DefaultGuesser(None).guess_bonds(group, positions.astype(np.float32))
        except (ValueError, KeyError) as err:
            raise ValueError(
                f"atomgroup has {int((~bonded).sum())} of {group.n_atoms} atoms without bonds in its topology "
                f"and they cannot be guessed ({err}); load a topology with bonds (PSF, PDB with CONECT, ...)"
            ) from err
        guessed = [(index[group[a].index], index[group[b].index]) for a, b in guessed]
        warnings.warn(
            f"{int((~bonded).sum())} of {group.n_atoms} atoms have no bonds in the topology; guessed "
            f"{len(guessed)} bonds from the distances of the first target frame", stacklevel=5)
        bonds = bonds + guessed
    bonds = np.unique(np.sort(np.asarray(bonds, dtype=np.int64).reshape(-1, 2), axis=1), axis=0)
    if len(bonds) == 0:
        raise ValueError(
            f"atomgroup ({group.n_atoms} atoms) has no bonds and none could be guessed from distances; "
            "load a topology with bonds (PSF, PDB with CONECT, ...)"
        )
    return bonds


class _Measures:
    """Targets of an AtomGroup's bond graph from reference frames, and the geometry measures of a report.

    ``measures(positions, stage)`` returns ``{name_stage: (values per frame, long_name, units)}``:
    bond-length RMSD and largest deviation (Å), bond-angle RMSD (degrees), heavy-atom clashes and
    inverted stereocentres (counts), all against the reference's mean geometry and handedness.
    """

    def __init__(self, group, reference_positions, masses):
        elements = _elements(group)
        self.heavy = elements != "H"
        self.bonds = _group_bonds(group, reference_positions[0])
        self.terms = bonded_terms(self.bonds, group.n_atoms, masses, reference_positions)
        self.angles = self.terms["angles"]
        self.bond_targets = _distances(reference_positions, self.bonds).mean(axis=0)
        self.angle_targets = _angles(reference_positions, self.angles).mean(axis=0)
        self.neighbours = _neighbours(self.bonds, group.n_atoms)
        self.stereo = _Stereocentres(self.terms["centres"], reference_positions, self.neighbours, ~self.heavy)
        heavy_index = np.flatnonzero(self.heavy)
        local = -np.ones(group.n_atoms, dtype=np.int64)
        local[heavy_index] = np.arange(len(heavy_index))
        exclusions = local[self.terms["exclusions"]]
        self.exclusions = exclusions[(exclusions >= 0).all(axis=1)]
        self.radii = np.array([VDW_RADII.get(e, 1.8) for e in elements[self.heavy]])
        self.polar = np.isin(elements[self.heavy], ["N", "O"])

    def __call__(self, positions, stage):
        suffix = f"_{stage}" if stage else ""
        words = f", {stage}" if stage else ""
        geometry = bond_geometry(positions, self.bonds, self.angles, self.bond_targets, self.angle_targets)
        clashes = count_clashes(positions[:, self.heavy], self.radii, self.exclusions, polar=self.polar)
        return {
            f"bond_rmsd{suffix}": (geometry["bond_rmsd"], f"bond-length RMSD from target{words}", "Å"),
            f"bond_max_deviation{suffix}": (geometry["bond_max_deviation"],
                                            f"largest bond-length deviation from target{words}", "Å"),
            f"angle_rmsd{suffix}": (geometry["angle_rmsd"], f"bond-angle RMSD from target{words}", "degree"),
            f"clashes{suffix}": (clashes, f"steric clashes of heavy atoms{words}", "count"),
            f"chirality_inversions{suffix}": (self.stereo.inverted(positions).sum(axis=1),
                                              f"inverted stereocentres{words}", "count"),
        }


def _frame_dataset(variables, frames, times):
    return xr.Dataset(
        {name: ("frame", values, {"long_name": long_name, "units": units})
         for name, (values, long_name, units) in variables.items()},
        coords={"frame": frames, "time": ("frame", times, {"units": "ps"})})


def structure_quality(atomgroup, reference=None):
    """Bond lengths, bond angles, clashes and chirality of every frame, against a reference's geometry.

    The measures of :class:`BondGeometryRepair`'s report, without repairing: use it to
    judge generated structures, or MD frames (the floor any structure should reach).

    Parameters
    ----------
    atomgroup : AtomGroup
        Atoms to judge over all frames of its Universe. Bonds come from the topology (guessed
        from distances, with a warning, where atoms have none).
    reference : AtomGroup, optional
        The same atoms (count and names) in a trajectory of good structures, e.g. MD: targets
        are its mean bond lengths and angles over all its frames, and its stereocentres'
        handedness. Default: the first frame of ``atomgroup``.

    Returns
    -------
    xarray.Dataset
        Over ``frame`` (with ``time`` in ps): ``bond_rmsd`` and ``bond_max_deviation`` (Å),
        ``angle_rmsd`` (degrees), ``clashes`` (heavy-atom pairs, not 1–2, 1–3 or 1–4, closer
        than the sum of their van der Waals radii less 0.4 Å, hydrogen bonds excepted; counts)
        and ``chirality_inversions`` (counts). Attribute ``targets``: "reference" or "first frame".

    Raises
    ------
    ValueError
        For a reference with other atoms, frames with NaN, or atoms without bonds that cannot
        be guessed.
    """
    _check_groups(atomgroup, reference)
    positions, times = read_frames(atomgroup)
    if reference is None:
        reference_positions = positions[:1]
    elif reference.universe is atomgroup.universe and reference == atomgroup:
        reference_positions = positions
    else:
        reference_positions = read_frames(reference, "reference")[0]
    measures = _Measures(atomgroup, reference_positions, np.asarray(atomgroup.masses, dtype=float))
    report = _frame_dataset(measures(positions, ""), np.arange(len(positions)), times)
    report.attrs["targets"] = "first frame" if reference is None else "reference"
    return report


def _check_groups(atomgroup, reference):
    if not isinstance(atomgroup, mda.core.groups.AtomGroup) or atomgroup.n_atoms == 0:
        raise TypeError(f"atomgroup must be a non-empty MDAnalysis AtomGroup, not {atomgroup!r}")
    if reference is not None:
        if not isinstance(reference, mda.core.groups.AtomGroup):
            raise TypeError(f"reference must be an MDAnalysis AtomGroup or None, not {type(reference).__name__}")
        if reference.n_atoms != atomgroup.n_atoms or np.any(reference.names != atomgroup.names):
            raise ValueError(
                f"reference has {reference.n_atoms} atoms ({list(reference.names[:4])}...) but atomgroup has "
                f"{atomgroup.n_atoms} ({list(atomgroup.names[:4])}...); pass the same atoms in the same order"
            )
