"""Checkpoint I/O: resolving names to files, reading and writing tensors, strict assignment."""
