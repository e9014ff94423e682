"""The ``LCoAClusterSort`` CPU reference lives with the op's spec in :mod:`lcoan.opspec`; this name
stays for existing imports (``benchmarks.cluster_sort``)."""
from lcoan.opspec import MAX_CLUSTERS, cluster_sort_reference

__all__ = ["MAX_CLUSTERS", "cluster_sort_reference"]
