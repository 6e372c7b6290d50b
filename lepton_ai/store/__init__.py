"""Storage layer: the registry (metadata in SQLAlchemy) and the artifact store (fsspec)."""

from lepton_ai.store.artifacts import ArtifactStore, StoredArtifact, sha256_of
from lepton_ai.store.refs import Ref, parse_ref
from lepton_ai.store.registry import ModelInfo, Registry, RunInfo, VersionInfo, local_path
from lepton_ai.store.services import ServiceInfo, Services

__all__ = [
    "ArtifactStore",
    "ModelInfo",
    "Ref",
    "Registry",
    "RunInfo",
    "ServiceInfo",
    "Services",
    "StoredArtifact",
    "VersionInfo",
    "local_path",
    "parse_ref",
    "sha256_of",
]
