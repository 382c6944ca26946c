"""Runtime: training loop, distributed launch, inference, evaluation, metrics, prediction."""
