"""Stage 2, labels: the teacher (LLM part + EASE^R + popularity, mixed on validation), the
candidate lists it scores, the label job and its engines (in-process, Ray Data), LoRA adaptation
of the teacher, and the schema of the soft-label dataset on disk."""
