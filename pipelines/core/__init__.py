"""Shared core of every stage: the config layer (dataclass <-> dict/YAML/flags), the one
atomic writer for files and folders, and the pure ranking metrics."""
