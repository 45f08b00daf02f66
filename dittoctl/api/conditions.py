"""The closed vocabularies of status and events (SPEC §3.2, §6): condition types, reasons, event reasons.

StrEnums, so they are written to the API as their plain CamelCase values and a typo is a type error.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    CONFIG_READY = "ConfigReady"
    DATABASE_READY = "DatabaseReady"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    RECONCILIATION_PAUSED = "ReconciliationPaused"
    PROVISIONED = "Provisioned"
    ADAPTERS_READY = "AdaptersReady"
    READY = "Ready"


class Reason(StrEnum):
    """Condition reasons."""

    CONFIG_RENDERED = "ConfigRendered"
    INVALID_SPEC = "InvalidSpec"
    MISSING_SECRET = "MissingSecret"
    CONFIG_MAP_MISSING = "ConfigMapMissing"
    STOPPED = "Stopped"
    REPLICAS_AVAILABLE = "ReplicasAvailable"
    NO_REPLICAS_AVAILABLE = "NoReplicasAvailable"
    STATEFULSET_UPDATING = "StatefulSetUpdating"
    SCALING_REPLICAS = "ScalingReplicas"
    RECONCILE_COMPLETE = "ReconcileComplete"
    POD_FAILING = "PodFailing"
    AS_EXPECTED = "AsExpected"
    ANNOTATION_SET = "AnnotationSet"
    CONDITIONS_NOT_MET = "ConditionsNotMet"
    ALL_CONDITIONS_MET = "AllConditionsMet"
    PERCONA_NOT_FOUND = "PerconaNotFound"
    PERCONA_NOT_READY = "PerconaNotReady"
    PERCONA_NOT_OWNED = "PerconaNotOwned"
    PERCONA_MISSING = "PerconaMissing"
    PERCONA_READY = "PerconaReady"
    POSTGRES_SECRET_INCOMPLETE = "PostgresSecretIncomplete"
    POSTGRES_SECRET_COMPLETE = "PostgresSecretComplete"
    WAITING_FOR_SECRET = "WaitingForSecret"
    CERT_MANAGER_NOT_FOUND = "CertManagerNotFound"
    WAITING_FOR_DATABASE = "WaitingForDatabase"
    DELETING = "Deleting"
    WAITING_FOR_SERVER = "WaitingForServer"
    API_UNREACHABLE = "ApiUnreachable"
    AUTH_FAILED = "AuthFailed"
    REJECTED = "Rejected"
    NOT_OWNED = "NotOwned"
    IMMUTABLE = "Immutable"
    CONVERGED = "Converged"
    JWT_SECRET_TOO_SHORT = "JwtSecretTooShort"
    ADMIN_PASSWORD_REFUSED = "AdminPasswordRefused"
    SECRET_VALUE_EMPTY = "SecretValueEmpty"
    LISTENING = "Listening"
    NOT_LISTENING = "NotListening"
    VOLUME_EXPANSION_FAILED = "VolumeExpansionFailed"


class EventReason(StrEnum):
    """Event reasons: SPEC §6 is a closed list."""

    CREATED = "Created"
    CONFIG_UPDATED = "ConfigUpdated"
    SECRET_ROTATED = "SecretRotated"
    SCALED = "Scaled"
    VOLUMES_EXPANDED = "VolumesExpanded"
    PERCONA_CREATED = "PerconaCreated"
    PERCONA_READY = "PerconaReady"
    PERCONA_NOT_READY = "PerconaNotReady"
    PERCONA_DRIFT_DETECTED = "PerconaDriftDetected"
    PERCONA_BACKUP_COMPLETED = "PerconaBackupCompleted"
    RECONCILE_FAILED = "ReconcileFailed"
    VALIDATION_FAILED = "ValidationFailed"
    MISSING_SECRET = "MissingSecret"
    """Warning: a referenced Secret or key is missing; the server waits for it (not a failure)."""
    DELETING = "Deleting"
    CLEANUP_TIMEOUT = "CleanupTimeout"
    PERCONA_DELETED = "PerconaDeleted"
    PERCONA_ORPHANED = "PerconaOrphaned"
    PROVISIONED = "Provisioned"
    """The declared file service converged in DittoFS (posted on the transition only)."""
    SHARE_CREATED = "ShareCreated"
    SHARE_DELETED = "ShareDeleted"
    USER_CREATED = "UserCreated"
    ADAPTER_RECONFIGURED = "AdapterReconfigured"
    """An adapter's port, state or settings were changed live in DittoFS, named (DittoFS needs no restart; a first
    port below 1024, or the last leaving, rolls the pod for its sysctl: a ConfigUpdated event says so)."""
    DRIFT_REPAIRED = "DriftRepaired"
    """An object the operator manages was changed or deleted in DittoFS by hand and was put back."""
    PROVISIONING_FAILED = "ProvisioningFailed"
    """Warning: a DittoFS call failed or the declaration conflicts with DittoFS (DittoFS's own message)."""
