"""Configuration: the pydantic document model and the YAML loader."""

from replicator.config.load import ConfigError, load_config, parse_config
from replicator.config.model import Config, EntityConfig

__all__ = ["Config", "ConfigError", "EntityConfig", "load_config", "parse_config"]
