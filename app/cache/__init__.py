"""Answer cache: in-process L1 (cachetools) in front of a bounded Redis L2."""
