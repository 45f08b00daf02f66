"""The declared file service of SPEC §13: pure types, observed-state records and the planner (no I/O)."""

from dittoctl.api.fileservice.observed import REMOTE_PROBE_HOLD, Observed, ObservedShare
from dittoctl.api.fileservice.planner import Plan, plan, read_only_stamps, share_ids
from dittoctl.api.fileservice.types import (
    AdapterSpec,
    Call,
    FileService,
    Grant,
    GroupSpec,
    Kind,
    NfsOptions,
    Op,
    Problem,
    ProblemKind,
    Ref,
    SecretValue,
    ShareSpec,
    SnapshotPolicySpec,
    StoreKind,
    StoreSpec,
    UserSpec,
)
from dittoctl.api.secrets import digest_of

__all__ = [
    "REMOTE_PROBE_HOLD", "AdapterSpec", "Call", "FileService", "Grant", "GroupSpec", "Kind", "NfsOptions", "Observed",
    "ObservedShare", "Op", "Plan", "Problem", "ProblemKind", "Ref", "SecretValue", "ShareSpec", "SnapshotPolicySpec",
    "StoreKind", "StoreSpec", "UserSpec", "digest_of", "plan", "read_only_stamps", "share_ids",
]
