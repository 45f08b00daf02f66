"""dittofs-operator: the `dittoctl` binary, process wiring and the shared API."""

# Every entry point imports this package first, before kopf: load the slim Kubernetes client (see
# dittoctl/kube/client.py) so kopf's probe for kubernetes_asyncio does not pull in ~45 MiB of models.
from dittoctl.kube import client as _kube_client  # noqa: F401
