"""Shared Kubernetes plumbing: the one gateway, its client, events, logs, metrics, timestamps and the
background-task shape. Imports only the shared API below it."""
