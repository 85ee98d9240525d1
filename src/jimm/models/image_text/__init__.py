"""What CLIP and SigLIP share: the config machinery, one name table, the model bases and the loader."""
