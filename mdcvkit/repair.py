"""Bond-geometry repair of generated structures.

Decoders produce coordinates whose bond lengths and angles are distorted.
:class:`BondGeometryRepair` moves every frame of an AtomGroup, all frames at
once, onto target bond lengths, bond angles (as 1–3 distances) and the planar
groups' 1–4 distances (peptide bonds keep their planarity and cis/trans
state), by mass-weighted constraint projection (SHAKE-like Gauss–Seidel
sweeps over edge-coloured constraints, with Anderson acceleration). The
chirality of every stereocentre is taken from the reference and restored
where the input has it inverted. An optional restrained energy minimisation
with OpenMM (``refine="openmm"``) follows.

The geometry measures of the report, :func:`bond_geometry`,
:func:`count_clashes` and :func:`chirality`, take plain arrays so that
ensemble comparisons can reuse them.
"""

import os
import tempfile
import warnings

import MDAnalysis as mda
import numpy as np
import torch
import xarray as xr
from MDAnalysis.analysis.base import AnalysisBase
from MDAnalysis.coordinates.memory import MemoryReader
from MDAnalysis.exceptions import NoDataError
from MDAnalysis.guesser.default_guesser import DefaultGuesser
from scipy.spatial import cKDTree

__all__ = ["BondGeometryRepair", "VDW_RADII", "bonded_terms", "bond_geometry", "chirality", "count_clashes",
           "structure_quality"]

#: Van der Waals radii (Å) by element (Bondi 1964); the report gives other elements 1.8 Å.
VDW_RADII = {"H": 1.20, "C": 1.70, "N": 1.55, "O": 1.52, "S": 1.80, "P": 1.80, "SE": 1.90}

#: Refinement back-ends of ``refine=``.
REFINERS = ("openmm",)

#: Smallest |normalised signed volume| of a stereocentre in the reference (planar centres are ~0, tetrahedral ~0.77).
_MIN_CHIRAL_VOLUME = 0.3
#: Rounds of chirality restoration and re-projection.
_CHIRALITY_ROUNDS = 3
#: Force tolerance (kJ/mol/nm) of the OpenMM minimisation of ``refine="openmm"`` (OpenMM's default).
_MINIMISER_TOLERANCE = 10.0
#: Bond deviation (Å) of a terminal atom after projection that marks it as trapped.
_STUCK_BOND = 0.1
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
        (sp2) only where its mean |normalised signed volume| (:func:`chirality`) is
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
        ``bond_rmsd`` (Å), ``bond_max_deviation`` (Å, largest |length − target|)
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


def _colour_groups(pairs, n_atoms):
    """Split constraint pairs into groups in which no atom appears twice (greedy edge colouring)."""
    used = [set() for _ in range(n_atoms)]
    colour = np.zeros(len(pairs), dtype=np.int64)
    for k, (i, j) in enumerate(pairs):
        c = 0
        while c in used[i] or c in used[j]:
            c += 1
        colour[k] = c
        used[i].add(c)
        used[j].add(c)
    return [np.flatnonzero(colour == c) for c in range(colour.max() + 1)] if len(pairs) else []


class _Projector:
    """Mass-weighted projection of frames onto pair distances: Gauss–Seidel sweeps + Anderson acceleration.

    Each sweep visits the constraints one colour group at a time (no atom twice in a group),
    moving both atoms of a pair along their separation in proportion to their inverse
    masses, as SHAKE does; Anderson acceleration over the last ``history`` sweeps speeds up
    the slow tail of Gauss–Seidel.
    """

    def __init__(self, pairs, targets, masses, history=3, device="cpu"):
        self.n_atoms = len(masses)
        self.history = history
        self.device = device
        inverse = torch.as_tensor(1.0 / np.asarray(masses, dtype=float), dtype=torch.float32, device=device)
        self.groups = []
        for group in _colour_groups(pairs, self.n_atoms):
            i = torch.as_tensor(pairs[group, 0], device=device)
            j = torch.as_tensor(pairs[group, 1], device=device)
            share = inverse[i] + inverse[j]
            self.groups.append((i, j, torch.as_tensor(targets[group], dtype=torch.float32, device=device)[:, None],
                                (inverse[i] / share)[:, None, None], (inverse[j] / share)[:, None, None]))

    def sweep(self, x):
        """One Gauss–Seidel sweep over all constraints; ``x`` is (n_atoms, 3, n_frames)."""
        x = x.clone()
        for i, j, target, share_i, share_j in self.groups:
            r = x[j] - x[i]
            distance = r.square().sum(1).sqrt()
            step = (1.0 - target / distance).unsqueeze(1) * r
            x.index_add_(0, i, share_i * step)
            x.index_add_(0, j, -share_j * step)
        return x

    def __call__(self, positions, tolerance, max_iterations, release=None):
        """Project (n_frames, n_atoms, 3) positions (Å).

        Frames leave the iteration when the RMS atom move of a sweep is at most ``tolerance``
        (Å), and, every 10 sweeps from the 30th, when ``release(positions)`` (bool per active
        frame) says that they are trapped. Returns the positions, the sweeps run and a bool
        per frame: converged.
        """
        n_frames, n_atoms = len(positions), self.n_atoms
        # atoms x xyz x frames: each colour group gathers and scatters whole rows of frames
        x = torch.as_tensor(positions.transpose(1, 2, 0).copy(), dtype=torch.float32, device=self.device)
        x = x.reshape(3 * n_atoms, n_frames)
        result = x.clone()
        active = torch.arange(n_frames, device=self.device)
        converged = torch.zeros(n_frames, dtype=torch.bool, device=self.device)
        anderson = _Anderson(self.history)
        iterations = 0
        while iterations < max_iterations and len(active):
            iterations += 1
            g = self.sweep(x.reshape(n_atoms, 3, -1)).reshape(x.shape)
            f = g - x
            done = f.square().mean(dim=0).sqrt() <= tolerance
            converged[active[done]] = True
            if release is not None and iterations >= 30 and iterations % 10 == 0:
                trapped = release(g.T.reshape(-1, n_atoms, 3).cpu().numpy().astype(np.float64))
                done |= torch.as_tensor(trapped, device=self.device)
            if bool(done.all()) or int(done.sum()) >= 0.25 * len(active):
                # frames leave in batches, so that the histories are not copied every sweep
                result[:, active[done]] = g[:, done]
                keep = ~done
                active, x, g, f = active[keep], x[:, keep], g[:, keep], f[:, keep]
                anderson.select(keep)
            if len(active):
                x = anderson.step(g, f)
        result[:, active] = x
        positions = result.reshape(n_atoms, 3, n_frames).permute(2, 0, 1).cpu().numpy().astype(np.float64)
        return positions, iterations, converged.cpu().numpy()


class _Anderson:
    """Anderson acceleration of a fixed-point map x -> g(x), per frame (columns), over the last ``history`` steps."""

    def __init__(self, history):
        self.history = history
        self.last = None  # (g, f) of the previous step
        self.d_g, self.d_f = [], []  # differences of successive g and f, each (n_coordinates, n_frames)
        self.gram = None  # (n_frames, k, k) float64 dot products of the d_f

    def select(self, keep):
        """Keep only the frames (columns) where ``keep`` is True."""
        if self.last is not None:
            self.last = (self.last[0][:, keep], self.last[1][:, keep])
        self.d_g = [d[:, keep] for d in self.d_g]
        self.d_f = [d[:, keep] for d in self.d_f]
        self.gram = None if self.gram is None else self.gram[keep]

    def step(self, g, f):
        """Next iterate from the map's value ``g`` and residual ``f = g - x`` at the current one."""
        if self.last is None:
            self.last = (g, f)
            return g
        d_f = f - self.last[1]
        self.d_g.append(g - self.last[0])
        self.d_f.append(d_f)
        self.last = (g, f)
        row = torch.stack([(d_f * d).sum(0) for d in self.d_f], dim=1).double()  # (n_frames, k)
        k = len(self.d_f)
        gram = row.new_zeros((row.shape[0], k, k))
        if k > 1:
            gram[:, :-1, :-1] = self.gram
        gram[:, -1, :] = row
        gram[:, :, -1] = row
        if k > self.history:
            self.d_g.pop(0)
            self.d_f.pop(0)
            gram = gram[:, 1:, 1:]
            k -= 1
        self.gram = gram
        rhs = torch.stack([(d * f).sum(0) for d in self.d_f], dim=1).double().unsqueeze(2)
        scale = gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-30)[:, None, None]
        eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
        gamma = torch.linalg.solve(gram + 1e-6 * scale * eye, rhs).squeeze(2).to(g.dtype)  # (n_frames, k)
        for n, d in enumerate(self.d_g):
            g = g - gamma[:, n] * d
        return g


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


class _Leaves:
    """Terminal atoms (H) trapped by the projection with a stretched bond, and how to place them again.

    A noisy hydrogen pushed through its neighbours can leave the projection in a local minimum
    with its bond stretched by most of an Å. All terminal atoms of its parent are then put where
    the reference has them relative to the parent and its other neighbours (Kabsch fit); a
    parent with three other neighbours (Cα) is put back in its place among them too.
    """

    def __init__(self, bonds, neighbours, bond_targets, reference):
        degree = np.array([len(row) for row in neighbours])
        leaf_first = degree[bonds[:, 0]] == 1
        keep = leaf_first | (degree[bonds[:, 1]] == 1)
        keep &= degree[bonds[:, 0]] + degree[bonds[:, 1]] > 2  # not a diatomic molecule
        self.parent = np.where(leaf_first, bonds[:, 1], bonds[:, 0])[keep]
        self.leaf = np.where(leaf_first, bonds[:, 0], bonds[:, 1])[keep]
        self.targets = bond_targets[keep]
        self.neighbours = neighbours
        self.reference = reference

    def stuck(self, positions):
        """Bool (n_frames, n_leaves): the leaf's bond is off its target by more than ``_STUCK_BOND`` Å."""
        length = np.linalg.norm(positions[:, self.leaf] - positions[:, self.parent], axis=-1)
        return np.abs(length - self.targets) > _STUCK_BOND

    def place(self, positions, stuck):
        """Positions with the stuck leaves, and the other leaves of their parents, put back in place (a copy)."""
        positions = positions.copy()
        degree = np.array([len(row) for row in self.neighbours])
        for frame, parent in {(f, self.parent[k]) for f, k in zip(*np.nonzero(stuck), strict=True)}:
            leaves = [n for n in self.neighbours[parent] if degree[n] == 1]
            others = [n for n in self.neighbours[parent] if degree[n] > 1]
            # three or more other neighbours fix the parent's place too (Cα): rebuild it with its leaves
            group, moved = (others, [parent, *leaves]) if len(others) >= 3 else ([parent, *others], leaves)
            rotation, shift = _kabsch(self.reference[group], positions[frame, group])
            positions[frame, moved] = self.reference[moved] @ rotation.T + shift
        return positions


def _kabsch(source, target):
    """Rotation R and shift t with source @ R.T + t the least-squares fit to target (both (n, 3), n >= 2)."""
    source_centre, target_centre = source.mean(axis=0), target.mean(axis=0)
    u, _, vt = np.linalg.svd((source - source_centre).T @ (target - target_centre))
    sign = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rotation = vt.T @ np.diag([1.0, 1.0, sign]) @ u.T
    return rotation, target_centre - source_centre @ rotation.T


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


def _trajectory_positions(group, name):
    """Positions (n_frames, n_atoms, 3) in Å of ``group`` over all frames of its trajectory, checked finite."""
    frames = np.stack([group.positions.astype(np.float64) for _ in group.universe.trajectory])
    if not np.isfinite(frames).all():
        raise ValueError(f"{name} has frames with NaN or infinite coordinates; pass clean frames")
    return frames


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
    positions = _trajectory_positions(atomgroup, "atomgroup")
    reference_positions = positions[:1] if reference is None else _trajectory_positions(reference, "reference")
    masses = np.asarray(atomgroup.masses, dtype=float)
    measures = _Measures(atomgroup, reference_positions, masses)
    times = np.array([ts.time for ts in atomgroup.universe.trajectory])
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
        Per frame, before and after: ``bond_rmsd_*`` and ``bond_max_deviation_*``
        (Å), ``angle_rmsd_*`` (degrees), ``clashes_*`` (heavy-atom pairs, 1–2, 1–3 and
        1–4 excluded, closer than the sum of vdW radii − 0.4 Å; donor–acceptor pairs
        only below 2.5 Å), ``chirality_inversions_*`` (relative to the reference);
        ``heavy_atom_displacement`` (RMS, Å); with ``refine``, ``energy_before`` and
        ``energy_after`` (kJ/mol, force field only). Attributes: ``targets``
        (``"reference"`` or ``"first frame"``), ``iterations``, ``converged``, and
        the numbers of bonds, angles, planar pairs and stereocentres.
    bonds, angles : numpy.ndarray of int
        The bonds (n_bonds, 2) and angles (n_angles, 3) used, indices into ``atomgroup``.

    Notes
    -----
    The fast stage, all frames at once: (1) Cα-like stereocentres (three heavy neighbours)
    that are inverted relative to the reference are reflected back through the plane of
    those neighbours; (2) mass-weighted projection onto the bond, 1–3 and planar 1–4
    distances (hydrogens move most, heavy atoms least); (3) frames whose CH2/CH3 centres
    came out inverted get two hydrogens swapped, frames with a hydrogen trapped on a stretched
    bond get it placed again from the reference, and those frames are projected again (up to
    three rounds). ``report.attrs["iterations"]`` is the most sweeps one round took. The
    targets averaged over the reference are not exactly compatible with each other (a mean
    of distances is not the distance of a mean structure), so bond RMSDs end near 0.002–0.005 Å
    rather than at 0. Steric clashes are measured, not removed, by the fast stage;
    ``refine="openmm"`` removes them.

    Examples
    --------
    >>> import mdcvkit as mk
    >>> u = mk.datasets.alanine_dipeptide()
    >>> reference = u.atoms  # better: an in-memory subsample of the MD frames, all frames are read
    >>> repair = mk.BondGeometryRepair(generated.atoms, reference=reference).run()  # doctest: +SKIP
    >>> repair.results.report.bond_rmsd_after.max()  # doctest: +SKIP

    References
    ----------
    J.-P. Ryckaert, G. Ciccotti, H. J. C. Berendsen, "Numerical integration of the Cartesian
    equations of motion of a system with constraints", J. Comput. Phys. 23, 327 (1977) (SHAKE).
    D. G. Anderson, "Iterative procedures for nonlinear integral equations", J. ACM 12, 547 (1965).
    V. B. Chen et al., "MolProbity: all-atom structure validation for macromolecular
    crystallography", Acta Cryst. D66, 12 (2010) (clash score).
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
        masses = np.asarray(atomgroup.masses, dtype=float)
        if np.any(~np.isfinite(masses) | (masses <= 0)):
            raise ValueError(
                f"atomgroup has atoms without a positive mass ({atomgroup[masses <= 0].names[:4]}...); "
                "set them with u.add_TopologyAttr('masses', ...) or "
                "u.guess_TopologyAttrs(to_guess=['masses'])"
            )
        self._masses = masses

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
            reference_positions, target_source = _trajectory_positions(self.reference, "reference"), "reference"
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
        self.results.universe = self._universe(repaired)
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

    def _universe(self, positions):
        universe = mda.Merge(self._atomgroup)
        universe.load_new(positions.astype(np.float32), format=MemoryReader)
        return universe

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
