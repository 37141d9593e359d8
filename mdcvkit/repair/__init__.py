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

from .core import REFINERS, BondGeometryRepair
from .geometry import VDW_RADII, bond_geometry, bonded_terms, chirality, count_clashes, structure_quality

__all__ = ["BondGeometryRepair", "REFINERS", "VDW_RADII", "bonded_terms", "bond_geometry", "chirality",
           "count_clashes", "structure_quality"]
