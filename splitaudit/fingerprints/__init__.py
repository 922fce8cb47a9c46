"""Per-image fingerprints: content digests, perceptual hashes and CNN embeddings."""
