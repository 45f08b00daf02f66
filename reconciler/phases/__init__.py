"""One reconcile phase per module, each a function of a `reconciler.context.Pass`.

Order of a pass (SPEC §4): finalizer -> spec -> secrets -> config (ConfigMap, Services) -> database
(Percona) -> statefulset -> status. `deletion` replaces all of them once the object is being deleted,
`paused` when reconciliation is switched off by annotation.
"""
