"""The work of each stage: stage one (alignment, export) and stage two (downstream models)."""
