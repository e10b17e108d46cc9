"""Data: text -> tokens (grain), the activation stream (model forward + filter), the on-device mixing
buffer, and the on-disk activation cache."""
