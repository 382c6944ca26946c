"""Datasets: the PASCAL VOC reader, the embedded generator and the training augmentation."""
