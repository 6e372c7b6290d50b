"""Jobs: specs of work, a persistent local queue and worker, and hand-off to Ray and Kubernetes."""

from lepton_ai.jobs.spec import JobSpec, Resources, load_spec, parse

__all__ = ["JobSpec", "Resources", "load_spec", "parse"]
