"""Quality signals, language ID, PII redaction, quality classifier and decisions (bronze -> silver.documents)."""
