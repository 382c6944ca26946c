"""Experiments: settings from params.yaml, the pipeline objects built from them, profiles and the paper tables."""
