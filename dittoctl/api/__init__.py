"""The shared API: models, names, kinds, Secret uses, validation rules and the CRD generated from them.

The lowest layer: pure, no I/O; both the webhook and the reconciler build on it.
"""
