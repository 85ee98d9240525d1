"""Image search: a folder of images embedded into a faiss index (`ImageIndex`), queried by text or by image.
`jimm index` and `jimm search` are the command line; faiss comes with `pip install 'jimm[search]'`."""

from .index import EXACT_LIMIT, Hit, ImageIndex, ModelRecord

__all__ = ["EXACT_LIMIT", "Hit", "ImageIndex", "ModelRecord"]
