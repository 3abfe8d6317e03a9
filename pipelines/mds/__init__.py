"""Curriculum mixtures (mixes/*.yaml) from gold.tokens to MosaicML MDS shards, one directory per stage."""
