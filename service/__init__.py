"""eqs-reward: a reward service for RL of e-commerce query suggestion (QualEQS judge over vLLM)."""

__version__ = "0.1.0"
