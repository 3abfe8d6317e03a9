"""MinHash near-deduplication (silver.documents -> silver.dedup + silver.dedup_signatures), full or incremental."""
