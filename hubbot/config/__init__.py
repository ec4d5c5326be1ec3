"""variants.yaml: the schema, the loader and the quant-type and recipe registry."""

from hubbot.config.load import config_lines, load_config
from hubbot.config.schema import (
    Config,
    SourceConfig,
    TextFile,
    VariantConfig,
    parse_size,
)

__all__ = ["Config", "SourceConfig", "TextFile", "VariantConfig", "config_lines", "load_config", "parse_size"]
