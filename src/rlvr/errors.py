"""The error a user fixes: imported by every layer, so it lives below all of them."""


class ConfigError(ValueError):
    """A bad recipe, override, path or data row; its message is one line meant for the user."""
