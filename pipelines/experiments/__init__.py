"""Stage 7, experiments: jobs that drive the other stages (the ablation over seeds, the scale
run, the serving load test, the label-engine and shared-prefix speed benchmarks) and the one
step graph (:mod:`pipelines.experiments.steps`) that the demo, the ablation and bench-scale
run their chains with."""
