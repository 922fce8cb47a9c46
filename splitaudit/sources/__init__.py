"""Everything that reads a dataset's layout: directories, manifests; in-memory arrays, tf.data
and path lists in :mod:`splitaudit.sources.arrays` (not imported here: it needs numpy)."""

from splitaudit.sources.base import CANONICAL_SPLITS, Sample, SampleSet, Skipped
from splitaudit.sources.directory import discover, parse_split_arg
from splitaudit.sources.manifest import read_manifest

__all__ = [
    "CANONICAL_SPLITS",
    "Sample",
    "SampleSet",
    "Skipped",
    "discover",
    "parse_split_arg",
    "read_manifest",
]
