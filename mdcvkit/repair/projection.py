"""Mass-weighted projection of many frames onto target distances, and the repair of trapped terminal atoms.

SHAKE-like Gauss–Seidel sweeps over edge-coloured constraints (no atom twice in
a colour group), all frames at once in torch, with Anderson acceleration.
"""

import numpy as np
import torch

__all__ = []

#: Bond deviation (Å) of a terminal atom after projection that marks it as trapped.
_STUCK_BOND = 0.1


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
