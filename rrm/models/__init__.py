"""Networks: ResNet-38 with the RRM heads, and the two-step DeepLab models."""
