"""Small pure helpers that the pod's cores (``training.secagg``, ``training.modelspec``) and the
server share: no Django, no torch, nothing of either core, so both import them (the pod's
distribution ships this package with them)."""
