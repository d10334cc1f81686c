"""Stage 6, evaluation: the benchmark job and its report, index evaluation (exact search as the
oracle) and scale runs, the distillation ablation, and the speed benchmarks of the label
engines; reads every artifact and writes JSON, Markdown and plots."""
