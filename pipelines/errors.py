"""The input-error type of the platform (`campaign_core.InputError`), under the name the pipelines use."""

from campaign_core.errors import InputError

__all__ = ["InputError"]
