"""Everything that reads a dataset's layout: directories, manifests (arrays come later)."""

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
