"""Experiments: the training stages' runs, the dvc.yaml deps generator, profiles and the paper tables."""
