"""MinHash near-deduplication (silver.documents -> silver.dedup). Arrives with the dedup issue."""
