"""Quality signals, language ID and filtering (bronze -> silver.documents). Arrives with the filtering issue."""
