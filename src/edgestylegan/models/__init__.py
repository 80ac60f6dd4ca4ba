from .mobilestylegan import Generator, GeneratorConfig, MappingNetwork, MobileSynthesisNetwork

__all__ = ["Generator", "GeneratorConfig", "MappingNetwork", "MobileSynthesisNetwork"]
