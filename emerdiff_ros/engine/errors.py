"""The engine's user errors: a value, device or layer that cannot be used. Anything else is a bug."""


class ConfigError(ValueError):
    """A configuration value this model or machine cannot use; the text says why."""
