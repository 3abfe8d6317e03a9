"""Tokenization with cl100k_base + DBRX specials: silver documents kept by the filter and dedup -> gold.tokens."""
