"""AIMv2's default sharding spec, at the original jimm's module path (defined with every spec
in `jimm.common.sharding`, the one module that names mesh axes).
Pass the class or an instance; customise with `dataclasses.replace`."""

from ...common.sharding import AIMv2Sharding

__all__ = ["AIMv2Sharding"]
