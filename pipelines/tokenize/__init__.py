"""Tokenization with cl100k_base + DBRX specials (-> gold.tokens). Arrives with the tokenization issue."""
