"""Stage 3, training: soft-label lists, the objective (student forward + pure losses), the
student job; reads soft labels from disk and writes a student model folder."""
