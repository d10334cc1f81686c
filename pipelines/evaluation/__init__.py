"""Stage evaluation: the benchmark job over each protocol's segments and its report, and index
evaluation (exact search as the oracle) at catalogue scale; reads every artifact and writes
JSON, Markdown and plots. The ablation and the speed and scale runs are in
``pipelines.experiments``."""
