"""recdistill pipelines: one folder per stage of the data flow (see docs/architecture.md).

core -> data -> labels -> training -> compression -> evaluation; `cli` knows every job and
`demo` runs the whole chain.
"""
