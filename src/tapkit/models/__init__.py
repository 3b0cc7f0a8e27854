"""Model families. One folder per family, one file per component."""
