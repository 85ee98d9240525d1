"""Pictures of what a model computes: dense feature PCA maps and attention overlays (`jimm features`)."""
