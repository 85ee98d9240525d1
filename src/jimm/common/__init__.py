"""Building blocks shared by every model: attention kernels, transformer layers, sharding specs."""
